"""The client's KV Connect backend: metadata exchange, retries, protobuf calls, watch streams.

HTTP/1.1 keep-alive through aiohttp by default, HTTP/2 through httpx on
request (see `transport.py` for why). Network errors and 5xx are retried with
exponential backoff and full jitter until the policy's deadline; 4xx is final
and carries the server's text.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar, cast
from urllib.parse import urljoin

from denokv.client.backend import Consistency
from denokv.client.errors import (
    KvConnectError,
    KvMetadataError,
    KvQueueError,
    KvReadDisabledError,
    KvUnavailableError,
    KvValidationError,
)
from denokv.client.transport import (
    AiohttpTransport,
    HttpxTransport,
    Transport,
    TransportError,
)
from denokv.operations import AtomicWrite, Entry, ReadRange, WriteResult, WriteStatus
from denokv.proto import datapath_pb2 as pb

REFRESH_MARGIN_S = 300  # refresh metadata this long before it expires
MAX_WATCH_FRAME = 16 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff for network errors and 5xx. `deadline_s=None` retries forever, like Deno."""

    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    deadline_s: float | None = 60.0

    def delay(self, attempt: int) -> float:
        cap = min(self.max_backoff_s, self.initial_backoff_s * (2**attempt))
        return random.uniform(0, cap)


@dataclass(frozen=True, slots=True)
class Metadata:
    version: int
    database_id: str
    endpoints: tuple[tuple[str, str], ...]  # (absolute url, consistency)
    token: str
    expires_at: float

    def endpoint(self, consistency: Consistency) -> str:
        wanted = [url for url, c in self.endpoints if c == consistency]
        strong = [url for url, c in self.endpoints if c == "strong"]
        chosen = (wanted or strong) if consistency == "eventual" else strong
        if not chosen:
            raise KvMetadataError("the server offers no strongly consistent endpoint")
        return chosen[0]

    def headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self.token}",
            "x-denokv-database-id": self.database_id,
            "x-denokv-version": str(self.version),
        }


class RemoteBackend:
    def __init__(
        self,
        url: str,
        access_token: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        http2: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        token = access_token or os.environ.get("DENO_KV_ACCESS_TOKEN")
        if not token:
            raise KvValidationError(
                "an access token is required: pass access_token= or set DENO_KV_ACCESS_TOKEN"
            )
        self.url = url
        self._token = token
        self.retry = retry or RetryPolicy()
        self._http: Transport = (
            HttpxTransport(timeout_s, plain_http=url.startswith("http://"))
            if http2
            else AiohttpTransport(timeout_s)
        )
        self._meta: Metadata | None = None
        self._meta_lock = asyncio.Lock()

    # -- metadata -----------------------------------------------------------------

    async def metadata(self, force: bool = False) -> Metadata:
        meta = self._meta
        if meta is not None and not force and meta.expires_at - time.time() > REFRESH_MARGIN_S:
            return meta
        async with self._meta_lock:
            if self._meta is not meta and self._meta is not None:
                return self._meta  # someone else refreshed it meanwhile
            self._meta = await self._with_retries(self._fetch_metadata)
            return self._meta

    async def _fetch_metadata(self) -> Metadata | Exception:
        status, body = await self._http.post(
            self.url,
            b'{"supportedVersions":[2,3]}',
            {"authorization": f"Bearer {self._token}", "content-type": "application/json"},
        )
        if status >= 500:
            return KvUnavailableError(f"metadata: server answered {status}")
        if status != 200:
            raise KvMetadataError(f"Failed to fetch metadata: {body.decode(errors='replace')}")
        try:
            doc = json.loads(body)
            version = int(doc["version"])
            if version not in (2, 3):
                raise ValueError(f"unsupported protocol version {version}")
            endpoints = tuple(
                (urljoin(self.url, e["url"]), str(e["consistency"])) for e in doc["endpoints"]
            )
            expires = datetime.fromisoformat(doc["expiresAt"].replace("Z", "+00:00"))
            return Metadata(version, doc["databaseId"], endpoints, doc["token"],
                            expires.timestamp())  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise KvMetadataError(f"Failed to parse metadata: {exc}") from None

    # -- calls ------------------------------------------------------------------------

    async def _with_retries(self, attempt_once: Callable[[], Awaitable[T | Exception]]) -> T:
        """Run `attempt_once` until it returns a non-exception; it returns one to retry."""
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                outcome = await attempt_once()
            except TransportError as exc:
                outcome = exc
            if not isinstance(outcome, Exception):
                return outcome
            delay = self.retry.delay(attempt)
            attempt += 1
            deadline = self.retry.deadline_s
            if deadline is not None and time.monotonic() - start + delay > deadline:
                raise KvUnavailableError(
                    f"{self.url} did not answer within {deadline:.0f} s "
                    f"({attempt} attempts; last error: {outcome})"
                ) from outcome
            await asyncio.sleep(delay)

    async def call(self, method: str, body: bytes, consistency: Consistency) -> bytes:
        """One data-path call with retries: the reply body of a 200, else an error."""

        async def once() -> bytes | Exception:
            meta = await self.metadata()
            url = f"{meta.endpoint(consistency)}/{method}"
            status, reply = await self._http.post(url, body, meta.headers())
            if status == 200:
                return reply
            text = reply.decode(errors="replace")
            if status >= 500:
                return KvUnavailableError(f"{url} answered {status}: {text}")
            raise KvConnectError(url, status, text)

        return await self._with_retries(once)

    async def snapshot_read(
        self, ranges: Sequence[ReadRange], consistency: Consistency
    ) -> list[list[Entry]]:
        msg = pb.SnapshotRead(
            ranges=[
                pb.ReadRange(start=r.start, end=r.end, limit=r.limit, reverse=r.reverse)
                for r in ranges
            ]
        )
        out = pb.SnapshotReadOutput.FromString(
            await self.call("snapshot_read", msg.SerializeToString(), consistency)
        )
        _check_read(out, consistency)
        return [
            [Entry(e.key, e.value, e.encoding, e.versionstamp) for e in r.values]
            for r in out.ranges
        ]

    async def atomic_write(self, write: AtomicWrite) -> WriteResult:
        msg = pb.AtomicWrite(
            checks=[pb.Check(key=c.key, versionstamp=c.versionstamp or b"") for c in write.checks],
            mutations=[
                pb.Mutation(
                    key=m.key,
                    value=pb.KvValue(data=m.value, encoding=cast("pb.ValueEncoding", m.encoding)),
                    mutation_type=cast("pb.MutationType", int(m.kind)),
                    expire_at_ms=max(m.expire_at_ms, 0),
                    sum_min=m.sum_min,
                    sum_max=m.sum_max,
                    sum_clamp=m.sum_clamp,
                )
                for m in write.mutations
            ],
            enqueues=[
                pb.Enqueue(
                    payload=e.payload,
                    deadline_ms=e.deadline_ms,
                    keys_if_undelivered=e.keys_if_undelivered,
                    backoff_schedule=e.backoff_schedule or (),
                )
                for e in write.enqueues
            ],
        )
        out = pb.AtomicWriteOutput.FromString(
            await self.call("atomic_write", msg.SerializeToString(), "strong")
        )
        if out.status == pb.AW_SUCCESS:
            return WriteResult(WriteStatus.SUCCESS, out.versionstamp)
        if out.status == pb.AW_CHECK_FAILURE:
            return WriteResult(WriteStatus.CHECK_FAILURE, failed_checks=tuple(out.failed_checks))
        if out.status == pb.AW_WRITE_DISABLED:
            return WriteResult(WriteStatus.WRITE_DISABLED)
        raise KvConnectError(self.url, 200, f"Unspecified write error (status={out.status})")

    async def watch(self, keys: Sequence[bytes]) -> AsyncIterator[list[Entry | None]]:
        body = pb.Watch(keys=[pb.WatchKey(key=k) for k in keys]).SerializeToString()
        current: list[Entry | None] = [None] * len(keys)
        attempt = 0
        while True:
            meta = await self.metadata()
            url = f"{meta.endpoint('eventual')}/watch"
            try:
                async with self._http.stream(url, body, meta.headers()) as (status, chunks):
                    if 400 <= status < 500:
                        text = b"".join([c async for c in chunks]).decode(errors="replace")
                        raise KvConnectError(url, status, text)
                    if status == 200:
                        async for msg in _frames(chunks):
                            attempt = 0
                            if msg.status != pb.SR_SUCCESS:
                                raise KvReadDisabledError()
                            for i, k in enumerate(msg.keys):
                                if k.changed:
                                    current[i] = _entry_of(k)
                            yield list(current)
            except TransportError:
                pass
            # The stream ended or broke: reconnect, and get a fresh full snapshot.
            await asyncio.sleep(self.retry.delay(attempt))
            attempt = min(attempt + 1, 10)

    async def listen_queue(self, handler: Callable[[bytes], Awaitable[None]]) -> None:
        raise KvQueueError("listen_queue is not possible over KV Connect: it has no dequeue call")

    async def close(self) -> None:
        await self._http.close()


def _check_read(out: pb.SnapshotReadOutput, consistency: Consistency) -> None:
    if out.status == pb.SR_READ_DISABLED or out.read_disabled:
        raise KvReadDisabledError()
    if out.status != pb.SR_SUCCESS:
        raise KvReadDisabledError(f"Unspecified read error (code={out.status})")
    if consistency == "strong" and not out.read_is_strongly_consistent:
        raise KvReadDisabledError("Strong consistency reads are not available for this database")


def _entry_of(k: pb.WatchKeyOutput) -> Entry | None:
    if not k.HasField("entry_if_changed"):
        return None
    e = k.entry_if_changed
    return Entry(e.key, e.value, e.encoding, e.versionstamp)


async def _frames(chunks: AsyncIterator[bytes]) -> AsyncIterator[pb.WatchOutput]:
    buf = b""
    async for chunk in chunks:
        buf += chunk
        while len(buf) >= 4:
            (n,) = struct.unpack_from("<I", buf)
            if n > MAX_WATCH_FRAME:
                raise TransportError(f"watch frame of {n} bytes is over the limit")
            if len(buf) < 4 + n:
                break
            payload, buf = buf[4 : 4 + n], buf[4 + n :]
            if n:
                yield pb.WatchOutput.FromString(payload)
