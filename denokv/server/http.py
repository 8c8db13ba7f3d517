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
import errno
import logging
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from denokv.server.app import KvServer

if TYPE_CHECKING:
    from denokv.server.processes import WorkerHub

log = logging.getLogger("denokv.http")

HTTP_SERVERS = ("granian", "granian-asgi", "hypercorn")


def check_port_free(host: str, port: int) -> None:
    """Raise OSError if a socket already listens on `host:port`.

    granian's listeners set SO_REUSEPORT (that is how our processes share the
    port), and Linux lets any other socket of the same user with that option
    join them: a second server started on the port by mistake, with another
    database behind it, would silently take a share of the connections. A
    socket without SO_REUSEPORT can never join, so binding one first tells
    whether the port is taken. Its SO_REUSEADDR passes over connections left
    in TIME_WAIT by an earlier run. (Two servers starting in the same instant
    could both pass: the check narrows the window, it cannot close it.)
    """
    if port == 0:
        return  # an ephemeral port is never taken
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise OSError(exc.errno, "the address is in use (is another server running?)") from None


async def serve(
    server: KvServer,
    host: str,
    port: int,
    http_server: str = "granian",
    *,
    quiet: bool = False,
    workers: WorkerHub | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully.

    Shutdown order: the worker processes stop first (their writes in flight
    still reach this process), then new data requests are refused and watch
    streams end, the HTTP server finishes its requests in flight, and the
    caller closes the engine (which commits every write still queued).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        server.reload_tokens()
        if workers is not None:
            workers.signal_all(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, reload)
    if http_server in ("granian", "granian-asgi"):
        await _serve_granian(
            server, host, port, stop, rsgi=http_server == "granian", quiet=quiet, workers=workers
        )
    elif http_server == "hypercorn":
        await _serve_hypercorn(server, host, port, stop)
    else:
        raise ValueError(f"unknown HTTP server {http_server!r}")


async def _serve_granian(
    server: KvServer,
    host: str,
    port: int,
    stop: asyncio.Event,
    rsgi: bool,
    quiet: bool = False,
    workers: WorkerHub | None = None,
) -> None:
    fronts = [_granian(server, rsgi, address=host, port=port)]
    if workers is not None:
        # The workers' other routes come here, on a socket nobody else can reach.
        fronts.append(_granian(server, rsgi, uds=workers.spec.relay_path))
    tasks = [asyncio.create_task(front.serve()) for front in fronts]
    if not quiet:
        _announce(host, port)
    if workers is not None:
        await workers.start()
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if workers is not None:
        await workers.stop()
    server.begin_shutdown()
    for front in fronts:
        front.stop()
    stopper.cancel()
    await asyncio.gather(*tasks)


def _granian(server: KvServer, rsgi: bool, **where: Any) -> Any:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP2Settings
    from granian.server.embed import Server

    if "uds" in where:
        where["uds"] = Path(where["uds"])
    return Server(
        server if rsgi else server.app,  # granian finds `__rsgi__` on the server
        **where,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGINL,
        http=HTTPModes.auto,
        websockets=False,
        backlog=1024,
        http2_settings=HTTP2Settings(max_concurrent_streams=1000),
        log_enabled=False,  # its start-up chatter; our own line says where we listen
        log_access=False,
    )


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
    await hypercorn_serve(server.app, config, shutdown_trigger=trigger)


def _announce(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    log.info("Listening on http://%s:%d", shown, port)
