"""Running the server on a real HTTP server: granian (default) or hypercorn.

Both serve HTTP/1.1 and h2c with prior knowledge on one port, which the Deno
CLI needs (its KV Connect client speaks only HTTP/2). The server runs in this
process and event loop, next to the engine it serves. granian serves the RSGI
interface (`KvServer.__rsgi__`), its cheapest; `granian-asgi` serves the same
server over granian's ASGI interface, and hypercorn over ASGI (`KvServer.app`).
Both granian and uvloop (under hypercorn) turn Nagle off on accepted sockets;
the server's `AckNudger` makes sure of it and sends prompt ACKs (see tcp.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from denokv.server.app import KvServer

log = logging.getLogger("denokv.http")

HTTP_SERVERS = ("granian", "granian-asgi", "hypercorn")


async def serve(server: KvServer, host: str, port: int, http_server: str = "granian") -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully.

    Shutdown order: refuse new data requests and end watch streams, let the
    HTTP server finish requests in flight, then the caller closes the engine
    (which commits every write still queued).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reload_tokens = getattr(server, "reload_tokens", None)
    if reload_tokens is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_tokens)
    if http_server in ("granian", "granian-asgi"):
        await _serve_granian(server, host, port, stop, rsgi=http_server == "granian")
    elif http_server == "hypercorn":
        await _serve_hypercorn(server, host, port, stop)
    else:
        raise ValueError(f"unknown HTTP server {http_server!r}")


async def _serve_granian(
    server: KvServer, host: str, port: int, stop: asyncio.Event, rsgi: bool
) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP2Settings
    from granian.server.embed import Server

    granian = Server(
        server if rsgi else server.app,  # granian finds `__rsgi__` on the server
        address=host,
        port=port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGINL,
        http=HTTPModes.auto,
        websockets=False,
        backlog=1024,
        http2_settings=HTTP2Settings(max_concurrent_streams=1000),
        log_enabled=False,  # its start-up chatter; our own line says where we listen
        log_access=False,
    )
    task = asyncio.create_task(granian.serve())
    _announce(host, port)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.begin_shutdown()
    granian.stop()
    stopper.cancel()
    await task


async def _serve_hypercorn(server: KvServer, host: str, port: int, stop: asyncio.Event) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10
    # Hypercorn closes a connection after 1000 requests by default, failing the
    # requests in flight on it; KV Connect clients keep one connection for life.
    config.keep_alive_max_requests = 2**62

    async def trigger() -> None:
        await stop.wait()
        server.begin_shutdown()

    _announce(host, port)
    await hypercorn_serve(server.app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]


def _announce(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    log.info("Listening on http://%s:%d", shown, port)
