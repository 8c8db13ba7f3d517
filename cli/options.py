"""Flags shared by several subcommands: the S3 location, and durations like `1s` or `24h`.

The S3 location comes as separate `--s3-*` flags, as a Litestream-style replica URL
(`--s3-url s3://bucket/prefix?endpoint=...&region=...&force-path-style=true`), or
both. Both are combined: a setting given in one place is taken from there, and a
setting given in both must say the same thing (or the command refuses to run), so
neither silently wins. The `DENO_KV_S3_*` variables count as their flags.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from timemachine.s3 import S3Options
    from timemachine.store import ConditionalWrites

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CHECKSUM_MODES = ("auto", "when_supported", "when_required")


def parse_duration(text: str) -> float:
    """`500ms`, `1s`, `1.5m`, `24h`, `7d`, or a bare number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 500ms, 1s, 24h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def env_name(flag: str) -> str:
    """The variable that stands for a flag: `--s3-sync-interval` is DENO_KV_S3_SYNC_INTERVAL."""
    return "DENO_KV_" + flag.removeprefix("--").replace("-", "_").upper()


def add_env_option(
    p: argparse._ActionsContainer,
    flag: str,
    text: str,
    *,
    default: str | None = None,
    note: str | None = None,
    from_env: Callable[[str | None], Any] | None = None,
    **kwargs: Any,
) -> None:
    """Add `flag`, which its DENO_KV_* variable (`env_name`) sets when it is not given.

    `default` is the text used when neither is; the help is `text` followed by
    "(env NAME, default DEFAULT; NOTE)". With a `type`, an empty variable counts as
    unset and argparse converts the text, so a bad value is a usage error that names
    the flag. `from_env` turns the text into the value itself (for switches).
    """
    name = env_name(flag)
    raw = os.environ.get(name, default)
    if kwargs.get("type") is not None:
        raw = raw or default
    told = f"env {name}" + (f", default {default}" if default is not None else "")
    told += f"; {note}" if note else ""
    value = from_env(raw) if from_env is not None else raw
    p.add_argument(flag, default=value, help=f"{text} ({told})", **kwargs)


def add_s3_location(p: argparse._ActionsContainer) -> None:
    """The S3 location options, on a parser or on one of its argument groups."""
    add_env_option(
        p,
        "--s3-url",
        "the backup location as a Litestream replica URL, "
        "s3://BUCKET/PREFIX?endpoint=URL&region=R&force-path-style=true&"
        "skip-verify=true; combined with the --s3-* flags, which must agree with it",
    )
    add_env_option(p, "--s3-bucket", "bucket holding the backup")
    add_env_option(p, "--s3-prefix", "key prefix inside the bucket, ending in '/'")
    add_env_option(
        p,
        "--s3-endpoint",
        "S3-compatible endpoint URL; a bare HOST[:PORT] means https",
        note="default AWS",
    )
    add_env_option(p, "--s3-region", "region", note="else AWS_REGION")
    add_env_option(
        p,
        "--s3-force-path-style",
        "address buckets as path, not host name",
        action="store_true",
        from_env=_flag,
    )
    add_env_option(
        p,
        "--s3-no-verify-ssl",
        "skip TLS certificate checks",
        action="store_true",
        from_env=_flag,
    )
    add_env_option(
        p,
        "--s3-request-checksum-calculation",
        "when to add checksums to uploads: auto is when_required with a custom endpoint "
        "(many S3-compatible stores reject the SDK's default checksums) and the SDK's "
        "default on AWS",
        default="auto",
        choices=_CHECKSUM_MODES,
    )
    add_env_option(
        p,
        "--s3-response-checksum-validation",
        "when to check the checksums of downloads, same choices",
        default="auto",
        choices=_CHECKSUM_MODES,
    )


@dataclass(frozen=True, slots=True)
class S3Url:
    """What a Litestream-style `s3://` replica URL says; None where it says nothing."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool | None = None
    skip_verify: bool | None = None
    sign_payload: bool | None = None


# Query parameter -> S3Url field; Litestream accepts both spellings.
_URL_PARAMETERS = {
    "endpoint": "endpoint",
    "region": "region",
    "force-path-style": "force_path_style",
    "forcePathStyle": "force_path_style",
    "skip-verify": "skip_verify",
    "skipVerify": "skip_verify",
    "sign-payload": "sign_payload",
    "signPayload": "sign_payload",
}
_BOOLEAN_FIELDS = ("force_path_style", "skip_verify", "sign_payload")


def parse_s3_url(text: str) -> S3Url:
    """`s3://BUCKET[/PREFIX][?endpoint=...&region=...&force-path-style=...&...]`.

    The prefix gets a trailing slash (`s3://b/db` is prefix `db/`). With an endpoint
    and no force-path-style, path-style addressing is on, as in Litestream.
    """
    parts = urlsplit(text.strip())
    where = f"invalid --s3-url {text!r}"
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{where}: expected s3://BUCKET/PREFIX?endpoint=...")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(f"{where}: the host part must be a bucket name only")
    if parts.fragment:
        raise ValueError(f"{where}: a fragment (#...) means nothing here")
    values: dict[str, Any] = {}  # S3Url fields, checked against _URL_PARAMETERS
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        field = _URL_PARAMETERS.get(name)
        if field is None:
            known = ", ".join(k for k in _URL_PARAMETERS if "-" in k or k in ("endpoint", "region"))
            raise ValueError(f"{where}: unknown parameter {name!r} (known: {known})")
        if field in values:
            raise ValueError(f"{where}: {name} is given twice")
        if not value:
            raise ValueError(f"{where}: {name} is empty")
        values[field] = _url_bool(value, name, where) if field in _BOOLEAN_FIELDS else value
    if values.get("endpoint") and "force_path_style" not in values:
        values["force_path_style"] = True
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Url(bucket=parts.netloc, prefix=prefix, **values)


def resolve_s3_url(args: argparse.Namespace) -> None:
    """Fold `--s3-url` into the `--s3-*` fields of `args`; ValueError on a contradiction.

    Afterwards `args.s3_bucket` etc. hold the combined settings, so code that only
    reads those sees the URL too. Calling it again changes nothing.
    """
    text = getattr(args, "s3_url", None)
    if not text:
        return
    url = parse_s3_url(text)
    args.s3_bucket = _agree("bucket", url.bucket, args.s3_bucket, "--s3-bucket")
    args.s3_prefix = _agree("prefix", url.prefix, args.s3_prefix or None, "--s3-prefix")
    args.s3_endpoint = _agree(
        "endpoint", url.endpoint, args.s3_endpoint, "--s3-endpoint", _same_endpoint
    )
    args.s3_region = _agree("region", url.region, args.s3_region, "--s3-region")
    args.s3_force_path_style = _agree_flag(
        "force-path-style", url.force_path_style, args.s3_force_path_style, "--s3-force-path-style"
    )
    args.s3_no_verify_ssl = _agree_flag(
        "skip-verify", url.skip_verify, args.s3_no_verify_ssl, "--s3-no-verify-ssl"
    )
    args.s3_sign_payload = url.sign_payload


def s3_options(args: argparse.Namespace) -> S3Options:
    """The S3 settings of a command line (ValueError when they make no sense)."""
    from timemachine.s3 import S3Options

    resolve_s3_url(args)
    key_id, secret = litestream_credentials(os.environ)
    return S3Options(
        bucket=args.s3_bucket or "",
        prefix=args.s3_prefix or "",
        endpoint=args.s3_endpoint or None,
        region=args.s3_region or os.environ.get("AWS_REGION") or None,
        force_path_style=bool(args.s3_force_path_style),
        verify_ssl=not args.s3_no_verify_ssl,
        sign_payload=getattr(args, "s3_sign_payload", None),
        request_checksum_calculation=args.s3_request_checksum_calculation,
        response_checksum_validation=args.s3_response_checksum_validation,
        access_key_id=key_id,
        secret_access_key=secret,
    )


def litestream_credentials(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Litestream's key pair, used when the standard AWS_ACCESS_KEY_ID is not set (the
    AWS chain wins when it is, as in Litestream)."""
    if env.get("AWS_ACCESS_KEY_ID"):
        return None, None
    key_id = env.get("LITESTREAM_ACCESS_KEY_ID") or None
    secret = env.get("LITESTREAM_SECRET_ACCESS_KEY") or None
    if bool(key_id) != bool(secret):
        have, missing = (
            ("LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY")
            if key_id
            else ("LITESTREAM_SECRET_ACCESS_KEY", "LITESTREAM_ACCESS_KEY_ID")
        )
        raise ValueError(f"{have} is set but {missing} is not")
    return key_id, secret


def _agree(
    what: str,
    from_url: str | None,
    from_flag: str | None,
    flag: str,
    same: Callable[[str, str], bool] = str.__eq__,
) -> str | None:
    if from_url is None or not from_flag:
        return from_url if from_url is not None else from_flag
    if not same(from_url, from_flag):
        raise ValueError(
            f"--s3-url says {what} {from_url!r} but {flag} says {from_flag!r}: "
            "give it in one place, or make them agree"
        )
    return from_flag


def _agree_flag(what: str, from_url: bool | None, from_flag: bool, flag: str) -> bool:
    if from_url is False and from_flag:
        raise ValueError(f"--s3-url says {what}=false but {flag} is set")
    return bool(from_url) or bool(from_flag)


def _same_endpoint(a: str, b: str) -> bool:
    from timemachine.s3 import endpoint_url

    try:
        return endpoint_url(a) == endpoint_url(b)
    except ValueError:
        return a == b


def _url_bool(value: str, name: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{where}: {name} must be true or false, not {value!r}")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def check_s3_store(options: S3Options, *, writes: bool) -> ConditionalWrites | None:
    """Fail fast, at start, when the backup location cannot work (missing bucket, access
    denied, bad credentials): one LIST, and for a primary (`writes`) a probe of
    conditional writes, with a warning when the store ignores them.

    An endpoint that cannot be reached (or answers 5xx) only gets a warning: the
    database must start during an S3 outage, and shipping catches up afterwards.
    Raises CliError; once running, S3 failures only delay shipping.
    """
    import asyncio
    import logging

    from cli.errors import CliError
    from timemachine.s3 import S3Store
    from timemachine.store import ObjectStoreError, check_conditional_writes

    log = logging.getLogger("denokv")

    async def probe() -> ConditionalWrites | None:
        store = S3Store(options)
        try:
            await store.list_folders(options.prefix)
            return await check_conditional_writes(store, options.prefix) if writes else None
        finally:
            await store.close()

    try:
        found = asyncio.run(probe())
    except ObjectStoreError as exc:
        if exc.code in _TRANSIENT or (exc.status is not None and exc.status >= 500):
            log.warning("the backup location cannot be reached yet (%s); starting anyway", exc)
            return None
        raise CliError(f"the backup location is not usable: {exc}") from None
    if found is not None and not found.enforced:
        log.warning(
            "s3://%s/%s: %s; nothing stops a second primary from writing the same prefix",
            options.bucket, options.prefix, found.describe(),
        )  # fmt: skip
    return found


# Store errors that say "not now" rather than "not like this".
_TRANSIENT = frozenset({"connect", "timeout", "SlowDown", "ServiceUnavailable", "InternalError"})
