"""Probe: CPU the KV app itself spends per request, without any HTTP server.

    python -m bench.probes.app_cost [--requests 2000] [--repeats 40] [--no-quickack]

Drives `KvServer.__rsgi__` in-process with a stand-in for granian's protocol
object (the body is ready at once, the answer goes nowhere), for
`snapshot_read` of one key and the trivial RSGI app of `bench/trivial_app.py`.
The difference is what the KV app adds to granian's own cost per request;
process CPU time, so other load on the machine matters less than for wall time,
and the least of many short runs, which this machine's neighbours disturb least.
The prompt ACK (`denokv.server.tcp`) acts on a real connection of the probe's own.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.trivial_app import rsgi_app
from denokv.engine import Engine
from denokv.keys import KvNumber, encode_key
from denokv.operations import AtomicWrite, Mutation, MutationKind
from denokv.proto import datapath_pb2 as pb
from denokv.server.app import KvServer, ServerConfig

TOKEN = "probe-token-0123456789"


class Headers(dict[str, str]):
    pass


class Scope:
    proto = "http"
    http_version = "1.1"
    method = "POST"
    scheme = "http"
    path = "/v2/snapshot_read"
    query_string = ""
    client = "127.0.0.1:40000"
    server = "127.0.0.1:4512"

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = Headers(headers)


class Proto:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.answers = 0

    async def _body(self) -> bytes:
        return self.body

    def __call__(self) -> Any:
        return self._body()

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        assert status == 200, body
        self.answers += 1


async def measure(app: Any, scope: Scope, proto: Proto, n: int, repeats: int) -> float:
    """The least CPU per request over `repeats` runs of `n` (the others caught noise)."""
    for _ in range(200):
        await app(scope, proto)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(n):
            await app(scope, proto)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000, help="requests per run")
    p.add_argument("--repeats", type=int, default=40, help="runs; the least is reported")
    p.add_argument("--no-quickack", action="store_true", help="leave out the prompt ACK")
    args = p.parse_args()
    # A real connection, as the server's prompt ACK finds it (AckNudger).
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    with tempfile.TemporaryDirectory() as tmp, listener, client, accepted:
        engine = Engine(str(Path(tmp) / "p.sqlite"))
        config = ServerConfig(access_token=TOKEN, quickack=not args.no_quickack)
        server = KvServer(engine, config)
        key = encode_key(("account", KvNumber(5.0)))
        value = Mutation(key=key, kind=MutationKind.SET, value=b"\xff\x0fI\xd0\x0f")
        await engine.atomic_write(AtomicWrite(mutations=(value,)))
        body = pb.SnapshotRead(
            ranges=[pb.ReadRange(start=key, end=key + b"\x00", limit=1)]
        ).SerializeToString()
        scope = Scope({
            "authorization": f"Bearer {TOKEN}", "x-denokv-version": "3",
            "x-denokv-database-id": "00000000-0000-0000-0000-000000000000",
            "content-length": str(len(body)),
        })  # fmt: skip
        (peer_host, peer_port), (host, port) = client.getsockname(), listener.getsockname()
        scope.client, scope.server = f"{peer_host}:{peer_port}", f"{host}:{port}"
        kv_us = await measure(server.__rsgi__, scope, Proto(body), args.requests, args.repeats)
        trivial_us = await measure(rsgi_app, scope, Proto(body), args.requests, args.repeats)
        engine.close()
    print(f"snapshot_read through KvServer.__rsgi__: {kv_us:.1f} us CPU per request")
    print(f"trivial RSGI app:                        {trivial_us:.1f} us CPU per request")
    print(f"the KV app adds:                         {kv_us - trivial_us:.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
