"""`denokv serve`: a KV Connect server, as a primary or (`--sync-from-s3`) a read replica.

A primary serves its SQLite file (with `--s3-bucket`, shipping the backup beside it);
a replica follows the backup in S3 and serves it read-only, forwarding writes and strong
reads to `--primary-url`. Both take the same front, metrics and process flags
(`cli/runtime.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from cli.errors import CliError
from cli.options import (
    add_env_option,
    add_s3_location,
    check_s3_store,
    parse_duration,
    s3_options,
)
from cli.runtime import (
    check_listen,
    front_options,
    parse_addr,
    run_loop,
    start_metrics_server,
    worker_hub,
)
from denokv import limits, texts
from denokv.engine import SYNCHRONOUS_MODES, Engine
from denokv.server.app import KvServer, ServerConfig
from denokv.server.auth import read_token_file
from denokv.server.http import HTTP_SERVERS, serve
from denokv.server.metadata import Endpoint
from timemachine.codec import COMPRESSIONS

log = logging.getLogger("denokv")


def add_parser(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="serve the database over KV Connect",
        description="Serve the database over KV Connect (HTTP/1.1 and h2c on one port).",
    )
    add_env_option(
        p, "--access-token", "shared secret clients must present, at least 12 characters"
    )
    add_env_option(p, "--access-token-file", "read the access token from this file instead")
    p.add_argument(
        "--addr", default="0.0.0.0:4512", help="IP:PORT to listen on (default 0.0.0.0:4512)"
    )
    p.add_argument(
        "--read-only", action="store_true", help="open the file read-only; writes are refused"
    )
    add_env_option(
        p,
        "--atomic-write-batch-timeout-ms",
        "wait this long to gather more writes into one commit",
        note="default: commit whatever is queued",
        type=float,
    )
    add_env_option(
        p,
        "--num-workers",
        "SQLite connections serving reads; 1 reads on the event loop",
        default="1",
        type=int,
    )
    add_env_option(
        p,
        "--read-cache-mb",
        "memory per server process for a cache of single-key reads, which the writer "
        "keeps current; 0 turns it off",
        default="32",
        type=int,
    )
    add_env_option(
        p,
        "--processes",
        "server processes sharing the port: reads run in all of them, writes go "
        "through the main one's single writer",
        note="default: the CPUs this process may use, at most 8; granian only",
        type=int,
    )
    add_env_option(
        p,
        "--http-server",
        "HTTP server implementation",
        default="granian",
        choices=HTTP_SERVERS,
    )
    add_env_option(
        p,
        "--request-body-timeout",
        "answer 408 to a request whose body has not fully arrived this long after its headers",
        default="30s",
        type=parse_duration,
    )
    add_env_option(
        p,
        "--tcp-quickack",
        "ACK each request's headers at once, so clients that leave Nagle on (Deno) do "
        "not wait ~40 ms for their body to go out",
        default="on",
        note="on or off",
        from_env=lambda text: text != "off",
        action=argparse.BooleanOptionalAction,
    )
    add_env_option(
        p,
        "--sqlite-synchronous",
        "SQLite synchronous setting; anything below full may lose the last "
        "acknowledged writes on power loss",
        default="full",
        choices=SYNCHRONOUS_MODES,
    )
    add_env_option(p, "--metrics-addr", "serve /metrics on this HOST:PORT instead of the main port")
    add_env_option(
        p,
        "--ready-max-backup-lag",
        "with backup on, /readyz fails while the oldest unshipped commit is older than this",
        default="5m",
        type=parse_duration,
    )
    add_env_option(
        p,
        "--console",
        "the web console at /console/: browse and edit, browse only, or none",
        default="read-only",
        choices=("read-write", "read-only", "off"),
    )
    _add_replica_options(p)
    _add_backup_options(p)
    p.set_defaults(run=run)


def _add_replica_options(p: argparse.ArgumentParser) -> None:
    replica = p.add_argument_group(
        "read replica",
        "With --sync-from-s3 the server follows the backup at --s3-bucket/"
        "--s3-prefix and serves it read-only.",
    )
    replica.add_argument(
        "--sync-from-s3", action="store_true", help="run as a read replica of the backup in S3"
    )
    add_env_option(
        replica,
        "--primary-url",
        "forward writes and strong reads to this primary; without it writes are refused",
    )
    add_env_option(
        replica, "--primary-access-token", "token for the primary", note="default: --access-token"
    )
    add_env_option(
        replica,
        "--replica-undo-window",
        "keep this much undo history for `pitr checkout` back in time; "
        "older undo entries are trimmed",
        default="1h",
        type=parse_duration,
    )
    add_env_option(
        replica,
        "--s3-poll-interval",
        "how often to look for new log segments",
        default="1s",
        type=parse_duration,
    )


def _add_backup_options(p: argparse.ArgumentParser) -> None:
    backup = p.add_argument_group(
        "backup to S3",
        "Continuous backup is on when --s3-bucket is set (AWS credentials come "
        "from the standard AWS environment and config).",
    )
    add_s3_location(backup)
    add_env_option(
        backup,
        "--s3-compression",
        "object body compression; 'none' writes plain protobuf that upstream's replica reads",
        default="zstd",
        choices=COMPRESSIONS,
    )
    add_env_option(
        backup,
        "--s3-sync-interval",
        "how often to upload a log segment",
        default="1s",
        type=parse_duration,
    )
    add_env_option(
        backup,
        "--s3-snapshot-interval",
        "start a new generation (a full snapshot) this often",
        default="24h",
        type=parse_duration,
    )
    add_env_option(
        backup,
        "--s3-lease-ttl",
        "how long the backup lease (one primary per prefix) lasts unless renewed; "
        "a primary that died is replaced after at most this long",
        default="60s",
        type=parse_duration,
    )
    add_env_option(
        backup,
        "--s3-retention",
        "keep every point of this window restorable",
        default="7d",
        type=parse_duration,
    )


def run(args: argparse.Namespace) -> int:
    """Check the flags both modes share, then serve as a replica or as a primary."""
    args.access_tokens = None
    if args.access_token_file:
        try:
            args.access_tokens = read_token_file(args.access_token_file)
        except OSError as exc:
            raise CliError(f"cannot read --access-token-file: {exc}") from None
        except ValueError as exc:
            raise CliError(f"--access-token-file: {exc}") from None
        args.access_token = args.access_tokens[0]
    if not args.access_token:
        raise CliError(
            "--access-token is required (or --access-token-file, or DENO_KV_ACCESS_TOKEN)"
        )
    if len(args.access_token.encode()) < limits.MIN_ACCESS_TOKEN_LENGTH:
        raise CliError(texts.TOKEN_TOO_SHORT)
    if args.num_workers < 1:
        raise CliError("--num-workers must be at least 1")
    if args.read_cache_mb < 0:
        raise CliError("--read-cache-mb must be 0 (off) or more")
    if args.processes is not None and args.processes < 1:
        raise CliError("--processes must be at least 1")
    if args.sync_from_s3:
        if args.read_only:
            raise CliError("--sync-from-s3 conflicts with --read-only (a replica is read-only)")
        return run_replica(args)
    return run_primary(args)


# -- the primary (or a read-only server of a file) ---------------------------------


def run_primary(args: argparse.Namespace) -> int:
    backup = bool(args.s3_bucket)
    try:
        host, port = parse_addr(args.addr)
        if backup:
            if args.read_only:
                raise ValueError("--read-only cannot ship backups: drop --s3-bucket or --read-only")
            s3_options(args).validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    check_listen(host, port)
    if backup:
        check_s3_store(s3_options(args), writes=True)

    engine = Engine(
        args.sqlite_path,
        read_only=args.read_only,
        synchronous=args.sqlite_synchronous,
        batch_timeout_ms=args.atomic_write_batch_timeout_ms,
        readers=args.num_workers,
        redo_log=backup,
        read_cache_bytes=args.read_cache_mb << 20,
    )
    config = ServerConfig(
        access_token=args.access_token,
        metrics_on_main_port=args.metrics_addr is None,
        console=args.console,
    )
    front_options(config, args)
    server = KvServer(engine, config)
    start_metrics_server(server, args.metrics_addr)
    try:
        run_loop(
            _serve_with_backup(server, args)
            if backup
            else serve(server, host, port, args.http_server, workers=worker_hub(server, args))
        )
    finally:
        engine.close()
        log.info("stopped; all acknowledged writes are committed")
    return 0


async def _serve_with_backup(server: KvServer, args: argparse.Namespace) -> None:
    """Serve, with the shipper beside the server; at shutdown it ships what is left."""
    from timemachine.s3 import S3Store
    from timemachine.shipper import Shipper, ShipperOptions

    host, port = parse_addr(args.addr)
    options = s3_options(args)
    store = S3Store(options)
    shipper = Shipper(
        server.engine,
        store,
        options.prefix,
        ShipperOptions(
            compression=args.s3_compression,
            sync_interval_s=args.s3_sync_interval,
            snapshot_interval_s=args.s3_snapshot_interval,
            retention_s=args.s3_retention,
            ready_max_lag_s=args.ready_max_backup_lag,
            lease_ttl_s=args.s3_lease_ttl,
        ),
        location=options.location(),
    )
    server.components.append(shipper)
    stop = asyncio.Event()
    task = asyncio.create_task(shipper.run(stop))
    try:
        await serve(server, host, port, args.http_server, workers=worker_hub(server, args))
    finally:
        stop.set()
        await task
        shipper.close()
        await store.close()


# -- the read replica (--sync-from-s3) ----------------------------------------------

BOOTSTRAPPING = "The replica is still loading its snapshot from S3; try again shortly."


def run_replica(args: argparse.Namespace) -> int:
    """Follow the backup in S3 and serve it read-only (writes go to --primary-url)."""
    try:
        host, port = parse_addr(args.addr)
        options = s3_options(args)
        options.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    check_listen(host, port)
    check_s3_store(options, writes=False)
    engine = Engine(
        args.sqlite_path,
        synchronous=args.sqlite_synchronous,
        readers=args.num_workers,
        sweep_expired=False,  # expired keys are hidden; deletions come from the primary
        read_cache_bytes=args.read_cache_mb << 20,
    )
    try:
        run_loop(_serve_replica(engine, args, host, port))
    finally:
        engine.close()
    return 0


async def _serve_replica(engine: Engine, args: argparse.Namespace, host: str, port: int) -> None:
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
