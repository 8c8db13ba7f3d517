"""`denokv pitr ...`: point-in-time recovery from the S3 backup."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.options import add_s3_location, s3_options
from denokv import versionstamp as stamps

if TYPE_CHECKING:
    import sqlite3

    from timemachine.restore import Point


def add_parser(commands: Any) -> None:
    pitr = commands.add_parser("pitr", help="point-in-time recovery from the S3 backup")
    sub = pitr.add_subparsers(dest="pitr_command", metavar="<command>", required=True)
    restore = sub.add_parser(
        "restore",
        help="build a database file from the backup at a point in time",
        description="Build a plain Deno KV file at --sqlite-path from the backup in S3. "
        "It is written to a temporary file and renamed into place.",
    )
    add_s3_location(restore)
    restore.add_argument(
        "--at",
        help="RFC 3339 time (2026-11-24T10:15:00Z) or 20-hex versionstamp; default: latest",
    )
    restore.add_argument(
        "--if-not-exists",
        action="store_true",
        help="do nothing when the file already exists, and start empty when the bucket "
        "holds no backup yet (an init step for a new primary)",
    )
    restore.set_defaults(run=run_restore)

    sync = sub.add_parser(
        "sync",
        help="fetch new backup data into a replica file without moving what it serves",
        description="Bootstrap the replica file at --sqlite-path if needed, then fetch every "
        "new log segment into its redo log. The served state does not move: use checkout.",
    )
    add_s3_location(sync)
    sync.set_defaults(run=run_sync)
    listing = sub.add_parser("list", help="list the recovery points of a replica file")
    listing.add_argument("--start", help="only points at or after this RFC 3339 time")
    listing.add_argument("--end", help="only points before this RFC 3339 time")
    listing.set_defaults(run=run_list)
    info = sub.add_parser("info", help="show the versionstamp a replica file serves")
    info.set_defaults(run=run_info)
    checkout = sub.add_parser(
        "checkout",
        help="move a replica file to a recovery point",
        description="Move the served state of the replica file to the commit boundary at "
        "VERSIONSTAMP (rounding down when going back, up when going forward).",
    )
    checkout.add_argument("versionstamp", metavar="VERSIONSTAMP", help="20 hex characters")
    checkout.set_defaults(run=run_checkout)


def parse_point(text: str | None) -> Point:
    from timemachine.restore import Point

    if text is None:
        return Point()
    if len(text) == 20 and all(c in "0123456789abcdefABCDEF" for c in text):
        return Point(versionstamp=bytes.fromhex(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid --at {text!r}: expected RFC 3339 time or a 20-hex versionstamp"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"invalid --at {text!r}: the time needs a zone, e.g. Z")
    return Point(time_ms=int(moment.timestamp() * 1000))


def run_restore(args: argparse.Namespace) -> int:
    from cli.errors import CliError
    from cli.output import terminal_progress
    from timemachine.restore import NoBackup, RestoreError, format_time, restore
    from timemachine.s3 import S3Store
    from timemachine.store import ObjectNotFound, ObjectStoreError

    output = Path(args.sqlite_path)
    if args.if_not_exists and output.exists():
        print(f"{output} exists; nothing to restore")
        return 0
    try:
        point = parse_point(args.at)
        options = s3_options(args)
        options.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def main() -> Any:
        store = S3Store(options)
        try:
            return await restore(store, options.prefix, point, output, terminal_progress)
        finally:
            await store.close()

    try:
        result = asyncio.run(main())
    except NoBackup as exc:
        if args.if_not_exists:
            print(f"{exc}; nothing to restore, the server will start empty")
            return 0
        raise CliError(f"restore failed: {exc}") from None
    except (RestoreError, ObjectStoreError, ObjectNotFound) as exc:
        raise CliError(f"restore failed: {exc}") from None
    when = format_time(result.commit_time_ms) if result.commit_time_ms else "snapshot time"
    print(
        f"Restored {output} at versionstamp {result.versionstamp.hex()} ({when}) from "
        f"generation {result.generation}: {result.keys} keys, {result.log_entries} log entries"
    )
    return 0


CHECKOUT_BATCH = 10_000  # log entries per commit of a checkout


def _replica_conn(path: str) -> sqlite3.Connection:
    """A connection for reading a replica file's time-travel state (tables made if missing)."""
    import sqlite3

    from denokv.engine_errors import DatabaseUnusable
    from denokv.tables import SchemaError, migrate, transaction
    from timemachine import timetravel

    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("pragma journal_mode = wal")
        migrate(conn)
        with transaction(conn):
            timetravel.create_tables(conn)
    except (sqlite3.Error, SchemaError) as exc:
        if conn is not None:
            conn.close()
        raise DatabaseUnusable(path, exc) from exc
    return conn


def run_sync(args: argparse.Namespace) -> int:
    from cli.errors import CliError
    from denokv.engine import Engine
    from replica.follower import Follower
    from timemachine.s3 import S3Store
    from timemachine.store import ObjectNotFound, ObjectStoreError

    try:
        options = s3_options(args)
        options.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    engine = Engine(args.sqlite_path, sweep_expired=False)

    async def main() -> None:
        store = S3Store(options)
        try:
            follower = Follower(engine, store, options.prefix)
            await follower.sync(apply=False)
        finally:
            await store.close()

    try:
        asyncio.run(main())
    except LookupError as exc:
        raise CliError(str(exc)) from None
    except (ObjectStoreError, ObjectNotFound) as exc:
        raise CliError(f"sync failed: {exc}") from None
    finally:
        engine.close()
    from timemachine import timetravel

    pending = timetravel.pending_redo(_replica_conn(args.sqlite_path))
    print(f"Synced; {pending} fetched entries wait in the redo log")
    return 0


def _parse_time(text: str | None, what: str) -> int | None:
    from cli.errors import CliError

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError
    except ValueError:
        raise CliError(f'invalid {what} time "{text}"') from None
    return int(moment.timestamp() * 1000)


def run_list(args: argparse.Namespace) -> int:
    from timemachine import timetravel
    from timemachine.restore import format_time

    start = _parse_time(args.start, "start") or 0
    end = _parse_time(args.end, "end")
    conn = _replica_conn(args.sqlite_path)
    for stamp, when in timetravel.recovery_points(conn, start, end):
        print(f"{stamp.hex()}\t{format_time(when)}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from timemachine import timetravel

    conn = _replica_conn(args.sqlite_path)
    current = stamps.commit_of(timetravel.current12(conn))
    print(f"Current versionstamp: {current.hex()}")
    return 0


def run_checkout(args: argparse.Namespace) -> int:
    from cli.errors import CliError
    from timemachine import timetravel

    text = args.versionstamp
    try:
        target = bytes.fromhex(text)
    except ValueError:
        target = b""
    if len(target) != 10:
        raise CliError(f"invalid versionstamp {text}")
    from denokv.engine import Engine
    from denokv.writer import Tx

    conn = _replica_conn(args.sqlite_path)
    bootstrapped = timetravel.get_state(conn).get("bootstrapped") == "1"
    conn.close()
    if not bootstrapped:
        raise CliError("initial snapshot not completed")
    engine = Engine(args.sqlite_path, sweep_expired=False)
    moved: list[timetravel.Moved] = []

    def step(tx: Tx) -> bool:
        # A bounded move per commit, each ending on a boundary (a state that existed).
        one = timetravel.checkout(tx.conn, stamps.after(target), CHECKOUT_BATCH)
        tx.set_version(one.version)
        moved.append(one)
        return not one.done

    try:
        engine.run_batches_sync(step, name="pitr checkout")
    finally:
        engine.close()
    print(f"Snapshot is now at versionstamp {stamps.commit_of(moved[-1].current12).hex()}")
    return 0
