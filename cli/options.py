"""Flags shared by several subcommands: the S3 location, and durations like `1s` or `24h`."""

from __future__ import annotations

import argparse
import os
import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`500ms`, `1s`, `1.5m`, `24h`, `7d`, or a bare number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 500ms, 1s, 24h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_s3_location(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--s3-bucket", default=env("DENO_KV_S3_BUCKET"),
                   help="bucket holding the backup (env DENO_KV_S3_BUCKET)")
    p.add_argument("--s3-prefix", default=env("DENO_KV_S3_PREFIX", ""),
                   help="key prefix inside the bucket, ending in '/' (env DENO_KV_S3_PREFIX)")
    p.add_argument("--s3-endpoint", default=env("DENO_KV_S3_ENDPOINT"),
                   help="S3-compatible endpoint URL (env DENO_KV_S3_ENDPOINT; default AWS)")
    p.add_argument("--s3-region", default=env("DENO_KV_S3_REGION") or env("AWS_REGION"),
                   help="region (env DENO_KV_S3_REGION, then AWS_REGION)")
    p.add_argument("--s3-force-path-style", action="store_true",
                   default=_flag(env("DENO_KV_S3_FORCE_PATH_STYLE")),
                   help="address buckets as path, not host name (env DENO_KV_S3_FORCE_PATH_STYLE)")
    p.add_argument("--s3-no-verify-ssl", action="store_true",
                   default=_flag(env("DENO_KV_S3_NO_VERIFY_SSL")),
                   help="skip TLS certificate checks (env DENO_KV_S3_NO_VERIFY_SSL)")  # fmt: skip


def s3_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from timemachine.s3 import S3Options

    return S3Options(
        bucket=args.s3_bucket or "",
        prefix=args.s3_prefix or "",
        endpoint=args.s3_endpoint,
        region=args.s3_region,
        force_path_style=args.s3_force_path_style,
        verify_ssl=not args.s3_no_verify_ssl,
    )


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
