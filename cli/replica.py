"""`denokv serve --sync-from-s3`: a read replica that follows the backup in S3."""

from __future__ import annotations

import argparse
import asyncio
import logging

from cli.errors import CliError
from cli.options import check_s3_store, s3_options
from cli.serve import _run_loop, front_options, parse_addr, start_metrics_server, worker_hub
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
    check_s3_store(options, writes=False)
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
    follower = Follower(
        engine,
        store,
        options.prefix,
        undo_window_s=args.replica_undo_window,
        location=options.location(),
    )
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
        console=args.console,
    )
    front_options(config, args)
    server = KvServer(engine, config)
    follower.stale_after_s = max(10.0, 5 * args.s3_poll_interval)
    server.components.append(follower)
    start_metrics_server(server, args.metrics_addr)
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(args.s3_poll_interval, stop))
    try:
        await serve(server, host, port, args.http_server, workers=worker_hub(server, args))
    finally:
        stop.set()
        await task
        if forwarder is not None:
            await forwarder.close()
        await store.close()
