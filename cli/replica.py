"""`denokv serve --sync-from-s3`: a read replica that follows the backup in S3."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from cli.errors import CliError
from cli.options import s3_options
from cli.serve import _run_loop, front_options, parse_addr, start_metrics_server
from denokv.engine import Engine
from denokv.server.app import KvServer, ServerConfig
from denokv.server.http import serve
from denokv.server.metadata import Endpoint

log = logging.getLogger("denokv.replica")

BOOTSTRAPPING = "The replica is still loading its snapshot from S3; try again shortly."


def run_replica(args: argparse.Namespace) -> int:
    try:
        host, port = parse_addr(args.addr)
        options = s3_options(args)
        options.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    engine = Engine(
        args.sqlite_path,
        synchronous=args.sqlite_synchronous,
        readers=args.num_workers,
        sweep_expired=False,  # expired keys are hidden; deletions come from the primary
    )
    try:
        _run_loop(_main(engine, args, host, port))
    finally:
        engine.close()
    return 0


async def _main(engine: Engine, args: argparse.Namespace, host: str, port: int) -> None:
    from replica.follower import Follower
    from replica.forwarder import PrimaryForwarder
    from timemachine.s3 import S3Store

    options = s3_options(args)
    store = S3Store(options)
    follower = Follower(engine, store, options.prefix)
    forwarder = None
    endpoints = [Endpoint("/v2", "strong")]
    if args.primary_url:
        forwarder = PrimaryForwarder(
            args.primary_url, args.primary_access_token or args.access_token
        )
        # Deno uses the first strong endpoint for everything; clients that choose
        # by consistency read the eventual one locally.
        endpoints = [Endpoint("/v2", "eventual"), Endpoint("/strong/v2", "strong")]
    stats = follower.stats
    config = ServerConfig(
        access_token=args.access_token,
        endpoints=endpoints,
        metrics_on_main_port=args.metrics_addr is None,
        accept_writes=False,
        reads_strongly_consistent=False,
        forwarder=forwarder,
        not_ready=lambda: None if stats.bootstrapped else BOOTSTRAPPING,
    )
    front_options(config, args)
    server = KvServer(engine, config)
    server.metrics.state.replica_stats = stats
    stale_after = max(10.0, 5 * args.s3_poll_interval)
    server.readiness.checks.append(lambda: _replica_problem(stats, stale_after))
    start_metrics_server(server, args.metrics_addr)
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(args.s3_poll_interval, stop))
    try:
        await serve(server, host, port, args.http_server)
    finally:
        stop.set()
        await task
        if forwarder is not None:
            await forwarder.close()
        await store.close()


def _replica_problem(stats: object, stale_after_s: float) -> str | None:
    if not getattr(stats, "bootstrapped", False):
        return "bootstrap from S3 not finished"
    last = getattr(stats, "last_poll", None)
    if last is None or time.time() - last > stale_after_s:
        return f"no successful poll of S3 in the last {stale_after_s:.0f} s"
    return None
