"""A trivial app on the project's own HTTP server setup, for bench/bank.py and bench/latency.py.

It answers every request with a fixed small protobuf-typed body, after reading
the request body, and is served exactly as `denokv serve` serves its app:
`denokv.server.http.serve` on the same event loop runner (uvloop when
installed), over the same interface: RSGI for `granian` (the default),
ASGI for `granian-asgi` and `hypercorn`. The difference between this and the
denokv server's `/v2/snapshot_read` is the cost of the KV app itself.

    python -m bench.trivial_app --addr 127.0.0.1:PORT [--http-server granian]
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, cast

from cli.runtime import parse_addr, run_loop
from denokv.server.app import KvServer
from denokv.server.http import HTTP_SERVERS, serve

# As long as the server's answer to a one-account snapshot_read (49 bytes).
BODY = bytes(49)
HEADERS = [(b"content-type", b"application/x-protobuf"), (b"content-length", b"%d" % len(BODY))]


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


RSGI_HEADERS = [(k.decode(), v.decode()) for k, v in HEADERS]


async def rsgi_app(scope: Any, proto: Any) -> None:
    await proto()
    proto.response_bytes(200, RSGI_HEADERS, BODY)


class Trivial:
    """What `serve` needs from a server object: `.app`, `__rsgi__` and `.begin_shutdown()`."""

    app = staticmethod(app)
    __rsgi__ = staticmethod(rsgi_app)

    def begin_shutdown(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--http-server", choices=HTTP_SERVERS, default="granian")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host, port = parse_addr(args.addr)
    # `serve` is typed for a KvServer but only uses what `Trivial` has.
    run_loop(serve(cast(KvServer, Trivial()), host, port, args.http_server))


if __name__ == "__main__":
    main()
