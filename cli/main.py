"""`denokv [--sqlite-path PATH] <command> ...` — parse arguments, dispatch to a subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cli import pitr, serve
from cli.errors import CliError
from cli.options import add_env_option, resolve_s3_url
from denokv.engine_errors import DatabaseUnusable
from timemachine.store import ObjectNotFound, ObjectStoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="denokv",
        description="Self-hosted Deno KV: a KV Connect server on a SQLite file.",
        epilog="Deno programs connect with Deno.openKv('http://HOST:PORT') and "
        "DENO_KV_ACCESS_TOKEN set to the server's access token.",
    )
    add_env_option(parser, "--sqlite-path", "database file")
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    serve.add_parser(commands)
    pitr.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("DENO_KV_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP call to S3 or the primary is noise at INFO.
    for chatty in ("httpx", "aiobotocore", "botocore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if not args.sqlite_path:
        parser.error("--sqlite-path is required (or set DENO_KV_SQLITE_PATH)")
    try:
        try:
            resolve_s3_url(args)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return int(args.run(args) or 0)
    except (CliError, DatabaseUnusable, ObjectStoreError, ObjectNotFound) as exc:
        # Expected failures: one line, no traceback (S3 errors name what was being done).
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
