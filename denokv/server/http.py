"""Running the ASGI app on a real HTTP server: granian (default) or hypercorn.

Both serve HTTP/1.1 and h2c with prior knowledge on one port, which the Deno
CLI needs (its KV Connect client speaks only HTTP/2). The server runs in this
process and event loop, next to the engine it serves.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from denokv.server.app import KvServer

log = logging.getLogger("denokv.http")

HTTP_SERVERS = ("granian", "hypercorn")


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
    if http_server == "granian":
        await _serve_granian(server, host, port, stop)
    elif http_server == "hypercorn":
        await _serve_hypercorn(server, host, port, stop)
    else:
        raise ValueError(f"unknown HTTP server {http_server!r}")


async def _serve_granian(server: KvServer, host: str, port: int, stop: asyncio.Event) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP2Settings
    from granian.server.embed import Server

    granian = Server(
        server.app,
        address=host,
        port=port,
        interface=Interfaces.ASGINL,
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
