"""`ObjectStore` on S3 and S3-compatible services, through aioboto3.

Credentials come from the standard AWS chain (environment, profile, instance role),
unless `S3Options` carries a key pair (the CLI takes Litestream's
`LITESTREAM_ACCESS_KEY_ID`/`LITESTREAM_SECRET_ACCESS_KEY` that way).

Conditional writes are S3's `If-None-Match: *` (create only) and `If-Match: <etag>`
(compare and swap); a refused condition (412, or 409 when a concurrent conditional
write won) is the answer None, not an error. Stores that do not support them ignore
the headers; `timemachine.store.check_conditional_writes` detects that.

Checksums: botocore >= 1.36 adds CRC32 checksums to every upload by default (and
validates them on downloads), which several S3-compatible stores reject. With a custom
endpoint the default here is to send and check them only where the operation
requires it, as Litestream does; on AWS botocore's own default stands.

Every failure is an `ObjectStoreError` naming the operation and the object.
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from timemachine.store import DeleteError, ObjectInfo, ObjectNotFound, ObjectStoreError

CHECKSUM_MODES = ("auto", "when_supported", "when_required")
_CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
_DELETE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class S3Options:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool = False
    verify_ssl: bool = True
    sign_payload: bool | None = None  # None: botocore's choice
    # "auto": when_required with a custom endpoint, botocore's default on AWS.
    request_checksum_calculation: str = "auto"
    response_checksum_validation: str = "auto"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    def location(self) -> dict[str, str | None]:
        """Where the backup lives, without credentials (status pages, restore commands)."""
        return {"bucket": self.bucket, "prefix": self.prefix, "endpoint": self.endpoint}

    def validate(self) -> None:
        if not self.bucket:
            raise ValueError("--s3-bucket not set")
        if self.prefix and not self.prefix.endswith("/"):
            raise ValueError("--s3-prefix must end with a slash")
        if self.endpoint:
            endpoint_url(self.endpoint)
        for name, value in (
            ("--s3-request-checksum-calculation", self.request_checksum_calculation),
            ("--s3-response-checksum-validation", self.response_checksum_validation),
        ):
            if value not in CHECKSUM_MODES:
                raise ValueError(f"invalid {name} {value!r}: expected one of {CHECKSUM_MODES}")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("an S3 access key id needs its secret access key, and back")

    @property
    def endpoint_url(self) -> str | None:
        return endpoint_url(self.endpoint) if self.endpoint else None

    def checksum_settings(self) -> dict[str, Any]:
        """The botocore Config keyword arguments for checksums (none: botocore's default)."""
        out: dict[str, Any] = {}
        for name, value in (
            ("request_checksum_calculation", self.request_checksum_calculation),
            ("response_checksum_validation", self.response_checksum_validation),
        ):
            if value == "auto" and self.endpoint:
                out[name] = "when_required"
            elif value != "auto":
                out[name] = value
        return out


# A host name, an IPv4 address or an IPv6 one (urlsplit drops its brackets).
_HOST = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*")


def endpoint_url(text: str) -> str:
    """`host[:port]` means https; only http and https URLs without a query are valid."""
    url = text.strip()
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if (
        parts.scheme not in ("http", "https")
        or not _HOST.fullmatch(host)
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"invalid S3 endpoint {text!r}: expected http(s)://HOST[:PORT]")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"invalid port in S3 endpoint {text!r}") from None
    return url.rstrip("/")


class S3Store:
    name = "s3"

    def __init__(self, options: S3Options) -> None:
        options.validate()
        self.options = options
        self.bucket = options.bucket
        self._session = aioboto3.Session(
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            s3_config: dict[str, Any] = {
                "addressing_style": "path" if self.options.force_path_style else "auto"
            }
            if self.options.sign_payload is not None:
                s3_config["payload_signing_enabled"] = self.options.sign_payload
            # aiobotocore would turn a botocore Config into this class itself.
            config = AioConfig(
                s3=s3_config,
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                **self.options.checksum_settings(),
            )
            self._client = await self._stack.enter_async_context(
                self._session.client(
                    "s3",
                    endpoint_url=self.options.endpoint_url,
                    region_name=self.options.region,
                    verify=self.options.verify_ssl,
                    config=config,
                )
            )
        return self._client

    @contextlib.contextmanager
    def _failures(self, operation: str, key: str) -> Iterator[None]:
        """Turn whatever botocore, aiohttp or the OS raised into an ObjectStoreError."""
        try:
            yield
        except (ObjectNotFound, ObjectStoreError):
            raise
        except (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason, code, status = describe_failure(exc, self.options.endpoint_url)
            target = f"{self.bucket}/{key}"
            raise ObjectStoreError(
                self.name, operation, target, reason, code=code, status=status
            ) from exc

    async def put(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str | None:
        if if_absent and if_match is not None:
            raise ValueError("put: if_absent and if_match cannot be combined")
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        if if_match is not None:
            extra["IfMatch"] = if_match
        with self._failures("put", key):
            s3 = await self._s3()
            try:
                resp = await s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
            except ClientError as exc:
                code = _code(exc)
                if extra and code in _CONDITION_FAILED:
                    return None
                if if_match is not None and code in _NOT_FOUND:
                    return None  # nothing to match: the object is gone
                raise
            etag = resp.get("ETag")
            if not etag:
                raise ObjectStoreError(
                    self.name, "put", f"{self.bucket}/{key}", "the store answered without an ETag"
                )
            return str(etag)

    async def get(self, key: str) -> bytes:
        body, _ = await self.get_versioned(key)
        return body

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        with self._failures("get", key):
            s3 = await self._s3()
            try:
                resp = await s3.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    raise ObjectNotFound(
                        key, f"s3: get {self.bucket}/{key}: no such object"
                    ) from None
                raise
            async with resp["Body"] as stream:
                body = await stream.read()
            return body, str(resp.get("ETag", ""))

    async def list(self, prefix: str, start_after: str | None = None) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        with self._failures("list", prefix):
            s3 = await self._s3()
            async for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", ()):
                    modified = item["LastModified"].timestamp()
                    out.append(ObjectInfo(item["Key"], item["Size"], modified))
        out.sort(key=lambda o: o.key)
        return out

    async def list_folders(self, prefix: str) -> builtins.list[str]:
        folders: list[str] = []
        with self._failures("list", prefix):
            s3 = await self._s3()
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                folders += [p["Prefix"][len(prefix) :] for p in page.get("CommonPrefixes", ())]
        return sorted(folders)

    async def delete(self, keys: Sequence[str]) -> None:
        failed: dict[str, str] = {}
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = list(keys[start : start + _DELETE_BATCH])
            more = f" (and {len(batch) - 1} more)" if len(batch) > 1 else ""
            with self._failures("delete", batch[0] + more):
                s3 = await self._s3()
                resp = await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            for error in resp.get("Errors", ()):
                code, message = error.get("Code", ""), error.get("Message", "")
                failed[error.get("Key", "?")] = f"{code}: {message}" if message else code
        if failed:
            raise DeleteError(self.name, self.bucket, failed)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


Failure = tuple[str, str | None, int | None]


def describe_failure(exc: BaseException, endpoint: str | None) -> Failure:
    """(reason, code, HTTP status) of a failed request, in words a user can act on."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if not code or code.isdigit():
            text = f"HTTP {status or code}" + (f" {message}" if message else "")
            return text, code or None, status
        return (f"{code}: {message}" if message and message != code else code), code, status
    where = _endpoint_of(exc, endpoint)
    if isinstance(exc, SSLError):
        return f"TLS failure talking to {where}: {exc.kwargs.get('error', exc)}", "tls", None
    if isinstance(exc, ConnectTimeoutError):
        return f"timed out connecting to endpoint {where}", "timeout", None
    if isinstance(exc, ReadTimeoutError):
        return f"timed out waiting for an answer from {where}", "timeout", None
    if isinstance(exc, ConnectionClosedError):
        return f"the connection to {where} closed before an answer", "connect", None
    if isinstance(exc, EndpointConnectionError):
        return f"could not connect to endpoint {where}", "connect", None
    if isinstance(exc, NoCredentialsError):
        return (
            "no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY, or an AWS profile)",
            "credentials",
            None,
        )
    if isinstance(exc, BotoCoreError):
        return str(exc), None, None
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None, None


def _endpoint_of(exc: BaseException, endpoint: str | None) -> str:
    """The scheme and host the request went to (not the object's path)."""
    url = getattr(exc, "kwargs", {}).get("endpoint_url") or endpoint or ""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else (endpoint or "AWS S3")
