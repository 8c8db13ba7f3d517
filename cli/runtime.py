"""What every serving mode of `denokv serve` shares at run time.

The primary and the replica both listen on `--addr`, run on the same event loop
(uvloop when installed), may serve /metrics on a port of their own, set up the HTTP
front from the same flags and may spread reads over worker processes. Those pieces
live here so the two modes of `cli/serve.py` take them from one place.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
import tempfile
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from cli.errors import CliError
from denokv.server.auth import read_token_file
from denokv.server.http import check_port_free

if TYPE_CHECKING:
    from denokv.server.app import KvServer, ServerConfig
    from denokv.server.processes import WorkerHub

log = logging.getLogger("denokv")


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"invalid --addr {addr!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)  # what the HTTP servers bind; a name they cannot
    except ValueError:
        raise ValueError(
            f"invalid --addr {addr!r}: the host must be an IP address, such as 0.0.0.0, "
            "127.0.0.1 or [::]"
        ) from None
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid port in --addr {addr!r}")
    return host, number


def check_listen(host: str, port: int) -> None:
    """Fail with one clear line, before anything starts, when `host:port` is taken."""
    try:
        check_port_free(host, port)
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        raise CliError(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to its end on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    if sys.version_info >= (3, 12):
        uvloop.run(main)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)


def front_options(config: ServerConfig, args: argparse.Namespace) -> None:
    """The HTTP front's settings, the same for a primary and a replica."""
    config.access_tokens = args.access_tokens
    if args.access_token_file:
        path = args.access_token_file
        config.token_source = lambda: read_token_file(path)
    config.body_timeout_s = args.request_body_timeout
    config.quickack = args.tcp_quickack


def worker_hub(server: KvServer, args: argparse.Namespace) -> WorkerHub | None:
    """The worker processes beside this one, when more than one process serves."""
    from denokv.server.processes import WorkerHub, WorkerSpec, default_processes

    count = args.processes if args.processes is not None else default_processes()
    if count <= 1 or args.sqlite_path == ":memory:":
        return None
    if args.http_server != "granian":
        if args.processes is not None:  # asked for, not just the default
            log.warning("--processes needs --http-server granian; serving from one process")
        return None
    host, port = parse_addr(args.addr)
    config = server.config
    relay = tempfile.mkdtemp(prefix="denokv-")
    spec = WorkerSpec(
        sqlite_path=args.sqlite_path,
        host=host,
        port=port,
        relay_path=os.path.join(relay, "relay.sock"),
        readers=args.num_workers,
        read_cache_bytes=args.read_cache_mb << 20,
        log_level=logging.getLevelName(logging.getLogger().level),
        config={
            "access_token": config.access_token,
            "access_tokens": config.access_tokens,
            "endpoints": [[e.url, e.consistency] for e in config.endpoints],
            "watch_keepalive_s": config.watch_keepalive_s,
            "accept_writes": config.accept_writes,
            "reads_strongly_consistent": config.reads_strongly_consistent,
            "body_timeout_s": config.body_timeout_s,
            "quickack": config.quickack,
            "token_file": args.access_token_file,
        },
    )
    hub = WorkerHub(server, count, spec)
    server.components.append(hub)
    return hub


def start_metrics_server(server: KvServer, addr: str | None) -> None:
    """Serve /metrics on a port of its own when --metrics-addr is given."""
    if not addr:
        return
    from prometheus_client import start_http_server

    try:
        host, port = parse_addr(addr)
    except ValueError as exc:
        raise CliError(str(exc).replace("--addr", "--metrics-addr")) from None
    try:
        start_http_server(port, host, registry=server.metrics.registry)
    except OSError as exc:
        raise CliError(f"cannot serve /metrics on {addr}: {exc.strerror or exc}") from None
