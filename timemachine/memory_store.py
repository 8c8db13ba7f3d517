"""An `ObjectStore` in a dict, with the faults tests need, for tests without a server.

It keeps S3's semantics where callers depend on them: ETags (quoted MD5 of the body,
as S3 gives for a single-part upload), create-only and compare-and-swap writes,
listings in key order, deleting an absent key is fine. On top of that a test can

* fail the next N calls (of every operation, or of one), with a chosen error, before
  the operation or after it took effect (a write that landed but whose answer was lost);
* hide an object from listings, still readable or not (an eventually consistent or
  half-deleted store);
* list out of order (reversed or shuffled);
* refuse to delete some keys (a DeleteObjects answer with per-key errors);
* ignore conditional writes, as s3rver does;
* replace any operation with a function of its own (the `*_func` fields), in the way
  Litestream's `mock` replica client is built from function fields; the dict-backed
  behaviour stays reachable as `default_put`, `default_get`, ...

Every call is counted in `calls` (operation -> number) and logged in `log`.
Operations yield to the event loop once before they run, so concurrent tasks
interleave as they would on a network store; each operation itself is atomic.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from timemachine.store import DeleteError, ObjectInfo, ObjectNotFound, ObjectStoreError

Operation = Literal["put", "get", "get_versioned", "list", "list_folders", "delete"]
OPERATIONS: tuple[Operation, ...] = (
    "put", "get", "get_versioned", "list", "list_folders", "delete"
)  # fmt: skip
ErrorFactory = Callable[[str, str], BaseException]  # (operation, target) -> exception
ListingOrder = Literal["key", "reverse", "shuffle"]
T = TypeVar("T")

PutFunc = Callable[[str, bytes, bool, "str | None"], Awaitable["str | None"]]
GetFunc = Callable[[str], Awaitable[bytes]]
GetVersionedFunc = Callable[[str], Awaitable[tuple[bytes, str]]]
ListFunc = Callable[[str, "str | None"], Awaitable[list[ObjectInfo]]]
ListFoldersFunc = Callable[[str], Awaitable[list[str]]]
DeleteFunc = Callable[[Sequence[str]], Awaitable[None]]


@dataclass(slots=True)
class StoredObject:
    body: bytes
    etag: str
    last_modified: float


@dataclass(slots=True)
class Fault:
    """Fail `remaining` more calls of `operation` (None: of any operation)."""

    remaining: int
    operation: Operation | None = None
    error: BaseException | ErrorFactory | None = None
    after: bool = False  # let the operation take effect, then raise

    def matches(self, operation: Operation) -> bool:
        return self.remaining > 0 and self.operation in (None, operation)


def etag_of(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


@dataclass(eq=False)
class MemoryStore:
    bucket: str = "memory"
    clock: Callable[[], float] = time.time
    enforce_conditions: bool = True
    listing_order: ListingOrder = "key"
    seed: int = 0
    objects: dict[str, StoredObject] = field(default_factory=dict)
    # Hidden from listings; the value says whether `get` still finds the object.
    hidden: dict[str, bool] = field(default_factory=dict)
    undeletable: dict[str, str] = field(default_factory=dict)  # key -> error reason
    faults: list[Fault] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False
    put_func: PutFunc | None = None
    get_func: GetFunc | None = None
    get_versioned_func: GetVersionedFunc | None = None
    list_func: ListFunc | None = None
    list_folders_func: ListFoldersFunc | None = None
    delete_func: DeleteFunc | None = None
    name: str = "memory"

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    # -- fault injection --------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        operation: Operation | None = None,
        error: BaseException | ErrorFactory | None = None,
        *,
        after: bool = False,
    ) -> Fault:
        """Fail the next `n` calls of `operation` (or of any); faults queue in order."""
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; expected one of {OPERATIONS}")
        fault = Fault(n, operation, error, after)
        self.faults.append(fault)
        return fault

    def hide(self, key: str, *, gettable: bool = True) -> None:
        """Leave `key` out of listings; with `gettable=False` also out of `get`."""
        self.hidden[key] = gettable

    def unhide(self, key: str) -> None:
        self.hidden.pop(key, None)

    def refuse_delete(self, key: str, reason: str = "AccessDenied: Access Denied") -> None:
        self.undeletable[key] = reason

    def keys(self) -> list[str]:
        """Every stored key in order, hidden ones included (for assertions)."""
        return sorted(self.objects)

    def _take_fault(self, operation: Operation) -> Fault | None:
        for fault in self.faults:
            if fault.matches(operation):
                fault.remaining -= 1
                return fault
        return None

    def _raise(self, fault: Fault, operation: Operation, target: str) -> None:
        self.faults = [f for f in self.faults if f.remaining > 0]
        error = fault.error
        if error is None:
            raise ObjectStoreError(
                self.name, operation, f"{self.bucket}/{target}", "injected fault", code="Injected"
            )
        raise error if isinstance(error, BaseException) else error(operation, target)

    async def _run(
        self, operation: Operation, target: str, action: Callable[[], Awaitable[T]]
    ) -> T:
        await asyncio.sleep(0)
        self.calls[operation] += 1
        self.log.append((operation, target))
        fault = self._take_fault(operation)
        if fault is not None and not fault.after:
            self._raise(fault, operation, target)
        result = await action()
        if fault is not None:
            self._raise(fault, operation, target)
        return result

    # -- the interface ----------------------------------------------------------------

    async def put(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str | None:
        if if_absent and if_match is not None:
            raise ValueError("put: if_absent and if_match cannot be combined")
        func = self.put_func or self.default_put
        return await self._run("put", key, lambda: func(key, bytes(body), if_absent, if_match))

    async def get(self, key: str) -> bytes:
        func = self.get_func or self.default_get
        return await self._run("get", key, lambda: func(key))

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        func = self.get_versioned_func or self.default_get_versioned
        return await self._run("get_versioned", key, lambda: func(key))

    async def list(self, prefix: str, start_after: str | None = None) -> list[ObjectInfo]:
        func = self.list_func or self.default_list
        return await self._run("list", prefix, lambda: func(prefix, start_after))

    async def list_folders(self, prefix: str) -> builtins.list[str]:
        func = self.list_folders_func or self.default_list_folders
        return await self._run("list_folders", prefix, lambda: func(prefix))

    async def delete(self, keys: Sequence[str]) -> None:
        func = self.delete_func or self.default_delete
        target = keys[0] if len(keys) == 1 else f"{len(keys)} keys"
        await self._run("delete", target, lambda: func(list(keys)))

    async def close(self) -> None:
        self.closed = True

    # -- the dict-backed behaviour (what the *_func hooks replace) --------------------

    async def default_put(
        self, key: str, body: bytes, if_absent: bool, if_match: str | None
    ) -> str | None:
        current = self.objects.get(key)
        if self.enforce_conditions:
            if if_absent and current is not None:
                return None
            if if_match is not None and (current is None or current.etag != if_match):
                return None
        stored = StoredObject(body, etag_of(body), self.clock())
        self.objects[key] = stored
        return stored.etag

    async def default_get(self, key: str) -> bytes:
        body, _ = await self.default_get_versioned(key)
        return body

    async def default_get_versioned(self, key: str) -> tuple[bytes, str]:
        stored = self.objects.get(key)
        if stored is None or self.hidden.get(key) is False:
            raise ObjectNotFound(key, f"{self.name}: get {self.bucket}/{key}: no such object")
        return stored.body, stored.etag

    async def default_list(self, prefix: str, start_after: str | None) -> builtins.list[ObjectInfo]:
        found = [
            ObjectInfo(key, len(obj.body), obj.last_modified)
            for key, obj in sorted(self.objects.items())
            if key.startswith(prefix)
            and key not in self.hidden
            and (start_after is None or key > start_after)
        ]
        return self._ordered(found)

    async def default_list_folders(self, prefix: str) -> builtins.list[str]:
        folders = set()
        for key in self.objects:
            if key.startswith(prefix) and key not in self.hidden:
                head, slash, _ = key[len(prefix) :].partition("/")
                if slash:
                    folders.add(head + "/")
        return self._ordered(sorted(folders))

    async def default_delete(self, keys: Sequence[str]) -> None:
        failed = {k: self.undeletable[k] for k in keys if k in self.undeletable}
        for key in keys:
            if key not in failed:
                self.objects.pop(key, None)
                self.hidden.pop(key, None)
        if failed:
            raise DeleteError(self.name, self.bucket, failed)

    def _ordered(self, items: builtins.list[T]) -> builtins.list[T]:
        if self.listing_order == "reverse":
            return items[::-1]
        if self.listing_order == "shuffle":
            shuffled = list(items)
            self._random.shuffle(shuffled)
            return shuffled
        return items
