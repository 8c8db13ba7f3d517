"""`denokv pitr ...`: point-in-time recovery from the S3 backup."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from cli.options import add_s3_location, s3_options


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
        help="do nothing when the file already exists (an init step for a new primary)",
    )
    restore.set_defaults(run=run_restore)


def parse_point(text: str | None):  # type: ignore[no-untyped-def]
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
    from cli.main import CliError
    from timemachine.restore import RestoreError, format_time, restore, terminal_progress
    from timemachine.s3 import S3Store

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
    except RestoreError as exc:
        raise CliError(f"restore failed: {exc}") from None
    when = format_time(result.commit_time_ms) if result.commit_time_ms else "snapshot time"
    print(
        f"Restored {output} at versionstamp {result.versionstamp.hex()} ({when}) from "
        f"generation {result.generation}: {result.keys} keys, {result.log_entries} log entries"
    )
    return 0
