"""`ObjectStore` on S3 and S3-compatible services, through aioboto3.

Credentials come from the standard AWS chain (environment, profile, instance
role). Every object is written once; `if_absent` uses a conditional PUT
(`If-None-Match: *`), which stores that do not support it simply ignore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from timemachine.store import ObjectInfo, ObjectNotFound


@dataclass(frozen=True, slots=True)
class S3Options:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool = False
    verify_ssl: bool = True

    def validate(self) -> None:
        if not self.bucket:
            raise ValueError("--s3-bucket not set")
        if self.prefix and not self.prefix.endswith("/"):
            raise ValueError("--s3-prefix must end with a slash")


class S3Store:
    def __init__(self, options: S3Options) -> None:
        options.validate()
        self.options = options
        self.bucket = options.bucket
        self._session = aioboto3.Session()
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            config = Config(
                s3={"addressing_style": "path" if self.options.force_path_style else "auto"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            )
            self._client = await self._stack.enter_async_context(
                self._session.client(
                    "s3",
                    endpoint_url=self.options.endpoint,
                    region_name=self.options.region,
                    verify=self.options.verify_ssl,
                    config=config,
                )
            )
        return self._client

    async def put(self, key: str, body: bytes, *, if_absent: bool = False) -> bool:
        s3 = await self._s3()
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            await s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    async def get(self, key: str) -> bytes:
        s3 = await self._s3()
        try:
            resp = await s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(key) from None
            raise
        async with resp["Body"] as stream:
            return await stream.read()

    async def list(self, prefix: str, start_after: str | None = None) -> list[ObjectInfo]:
        s3 = await self._s3()
        out: list[ObjectInfo] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", ()):
                out.append(ObjectInfo(item["Key"], item["Size"], item["LastModified"].timestamp()))
        out.sort(key=lambda o: o.key)
        return out

    async def list_folders(self, prefix: str) -> list[str]:
        s3 = await self._s3()
        folders: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            folders += [p["Prefix"][len(prefix) :] for p in page.get("CommonPrefixes", ())]
        return sorted(folders)

    async def delete(self, keys: Sequence[str]) -> None:
        s3 = await self._s3()
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
