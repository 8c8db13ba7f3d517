"""The object store interface every backup destination implements.

S3 (`timemachine.s3`) and the in-memory store for tests (`timemachine.memory_store`)
implement it; the shipper, restore and the replica's follower only ever see this
interface. It is small on purpose, and it carries what a lease needs: conditional
writes (create-only and compare-and-swap on the ETag) and reads that return the
ETag they saw.

Failures are `ObjectStoreError`s that name the store, the operation and the object
(`s3: put bucket/key: AccessDenied: Access Denied`), so a log line or a CLI error
says what was being done. A missing object is `ObjectNotFound`, which is not an
`ObjectStoreError`: callers treat it as an answer, not a failure.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class ObjectNotFound(Exception):
    """The object does not exist (or the store cannot see it)."""

    def __init__(self, key: str, message: str | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.message = message or f"{key}: no such object"

    def __str__(self) -> str:
        return self.message


class ObjectStoreError(Exception):
    """An operation on the store failed; the text names the operation and the object.

    `code` is the store's error code when it gave one (`AccessDenied`, `NoSuchBucket`,
    `SlowDown`), or a short word for failures without one (`connect`, `timeout`,
    `credentials`); `status` is the HTTP status when there was an answer.
    """

    def __init__(
        self,
        store: str,
        operation: str,
        target: str,
        reason: str,
        *,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{store}: {operation} {target}: {reason}")
        self.store = store
        self.operation = operation
        self.target = target
        self.reason = reason
        self.code = code
        self.status = status


class DeleteError(ObjectStoreError):
    """Some objects of a `delete` were not deleted; `failed` maps each key to why.

    The other keys of the same call were deleted.
    """

    def __init__(self, store: str, bucket: str, failed: Mapping[str, str]) -> None:
        self.failed = dict(failed)
        keys = sorted(self.failed)
        shown = ", ".join(f"{bucket}/{k}" for k in keys[:5])
        more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
        reasons = sorted(set(self.failed.values()))
        reason = f"{len(keys)} not deleted: {'; '.join(reasons[:3])}"
        super().__init__(store, "delete", shown + more, reason, code="PartialDelete")

    @property
    def keys(self) -> list[str]:
        return sorted(self.failed)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float  # seconds since the epoch


class ObjectStore(Protocol):
    async def put(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str | None:
        """Store `body` at `key` and return the new object's ETag (never empty).

        With `if_absent`, only create: when an object is already there, change nothing
        and return None. With `if_match`, only replace the object whose current ETag is
        `if_match`: when it has another ETag or is gone, change nothing and return None.
        (The two cannot be combined.) Stores that ignore conditional writes just write;
        `check_conditional_writes` tells them apart.
        """
        ...

    async def get(self, key: str) -> bytes:
        """The object's body; ObjectNotFound if there is none."""
        ...

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's body and its ETag (for a later `put(if_match=...)`)."""
        ...

    async def list(self, prefix: str, start_after: str | None = None) -> list[ObjectInfo]:
        """Every object under `prefix` in key order, after `start_after` if given."""
        ...

    async def list_folders(self, prefix: str) -> builtins.list[str]:
        """The next path segment of every key under `prefix` ("a/" for "prefix/a/x")."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete `keys` (absent ones are fine). DeleteError names the keys that the
        store refused to delete; the others are gone."""
        ...

    async def close(self) -> None: ...


# Keys of probe objects start with this, right under the backup prefix.
PROBE_PREFIX = ".denokv-probe-"
_UNKNOWN_ETAG = '"00000000000000000000000000000000"'


@dataclass(frozen=True, slots=True)
class ConditionalWrites:
    """What a store did with conditional writes, as measured by a probe."""

    if_absent: bool  # a second create-only put of the same key was refused
    if_match: bool  # a put with a wrong ETag was refused and one with the right ETag taken

    @property
    def enforced(self) -> bool:
        return self.if_absent and self.if_match

    def describe(self) -> str:
        if self.enforced:
            return "conditional writes are enforced"
        ignored = [
            name
            for name, ok in (("If-None-Match", self.if_absent), ("If-Match", self.if_match))
            if not ok
        ]
        return f"the store does not enforce {' and '.join(ignored)}"


async def check_conditional_writes(store: ObjectStore, prefix: str) -> ConditionalWrites:
    """Probe whether `store` enforces conditional writes, with throw-away objects under
    `prefix` (deleted afterwards): five PUTs and one DELETE.

    Some S3-compatible stores (s3rver, older MinIO) accept the headers and ignore them,
    or some of them: there a create-only write overwrites and a lease cannot fence
    anyone.
    """
    key = f"{prefix}{PROBE_PREFIX}{secrets.token_hex(8)}"
    absent = f"{key}-absent"
    first = await store.put(key, b"probe 1", if_absent=True)
    try:
        if first is None:
            name = getattr(store, "name", "store")
            raise ObjectStoreError(name, "put", key, "a new random key already exists")
        second = await store.put(key, b"probe 2", if_absent=True)
        current = first if second is None else second
        stale = await store.put(key, b"probe 3", if_match=_UNKNOWN_ETAG)
        if stale is not None:
            current = stale
        matched = await store.put(key, b"probe 4", if_match=current)
        # Some MinIO releases wrote a missing object despite If-Match.
        created = await store.put(absent, b"probe 5", if_match=current)
    finally:
        await store.delete([key, absent])
    if_match = stale is None and matched is not None and created is None
    return ConditionalWrites(if_absent=second is None, if_match=if_match)
