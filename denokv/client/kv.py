"""`Kv`: the Python mirror of `Deno.Kv`, on top of any backend.

Keys are sequences of str, bytes, int (a JS bigint), float (a JS number), bool,
or the explicit wrappers `KvInt` / `KvNumber` from `denokv.keys`. A Deno
program's `["accounts", 1]` is `("accounts", 1.0)` or `("accounts", KvNumber(1))`
here; `("accounts", 1)` is the different key `["accounts", 1n]`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from denokv import limits as L
from denokv.client.backend import Backend, Consistency
from denokv.client.errors import KvClosedError, KvValidationError, KvWriteDisabledError
from denokv.client.selectors import Bounds, encode_cursor, resume, selector_bounds
from denokv.keys import Key, KeyCodecError, KeyPart, decode_key, encode_key
from denokv.operations import (
    NO_EXPIRY,
    AtomicWrite,
    Check,
    Enqueue,
    Entry,
    Mutation,
    MutationKind,
    ReadRange,
    ValueEncoding,
    WriteStatus,
)
from denokv.validation import MAX_TIMESTAMP_MS
from denokv.values import KvU64, decode_value, encode_v8, encode_value

MAX_CLIENT_CHECKS = 100
MAX_TOTAL_KEY_SIZE = 81_920
MAX_BACKOFF_INTERVALS = 5


class _CommitVersionstamp:
    """Marker: as the last part of a `set` key, replaced by the commit's versionstamp."""

    def __repr__(self) -> str:
        return "COMMIT_VERSIONSTAMP"


COMMIT_VERSIONSTAMP = _CommitVersionstamp()
# A key for `set`: its last part may be COMMIT_VERSIONSTAMP.
SetKey = Sequence[KeyPart | _CommitVersionstamp]


@dataclass(frozen=True, slots=True)
class KvEntry:
    """One key's state; `versionstamp` (and `value`) are None when the key does not exist."""

    key: tuple[KeyPart, ...]
    value: Any
    versionstamp: str | None


@dataclass(frozen=True, slots=True)
class CommitResult:
    ok: bool
    versionstamp: str | None = None
    failed_checks: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return self.ok


def _entry(key: tuple[KeyPart, ...], e: Entry | None) -> KvEntry:
    if e is None:
        return KvEntry(key, None, None)
    return KvEntry(key, decode_value(e.value, e.encoding), e.versionstamp.hex())


def _key(key: Key) -> bytes:
    """`encode_key`, its refusals raised as the client's validation error."""
    try:
        return encode_key(key)
    except KeyCodecError as exc:
        raise KvValidationError(str(exc)) from None


def _read_key(key: Key) -> bytes:
    raw = _key(key)
    if len(raw) > L.MAX_READ_KEY_SIZE:
        raise KvValidationError(f"Key too large for read (max {L.MAX_READ_KEY_SIZE} bytes)")
    return raw


def _write_key(key: Key) -> bytes:
    raw = _key(key)
    if not raw:
        raise KvValidationError("key cannot be empty")
    if len(raw) > L.MAX_WRITE_KEY_SIZE:
        raise KvValidationError(f"Key too large for write (max {L.MAX_WRITE_KEY_SIZE} bytes)")
    return raw


class Kv:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._closed = False

    # -- reads ------------------------------------------------------------------

    async def get(self, key: Key, *, consistency: Consistency = "strong") -> KvEntry:
        return (await self.get_many([key], consistency=consistency))[0]

    async def get_many(
        self, keys: Sequence[Key], *, consistency: Consistency = "strong"
    ) -> list[KvEntry]:
        if len(keys) > L.MAX_READ_RANGES:
            raise KvValidationError(f"Too many ranges (max {L.MAX_READ_RANGES})")
        raws = [_read_key(k) for k in keys]
        results = await self._read([ReadRange(k, k + b"\x00", 1) for k in raws], consistency)
        return [
            _entry(tuple(k), rows[0] if rows else None)
            for k, rows in zip(keys, results, strict=True)
        ]

    def list(
        self,
        prefix: Key | None = None,
        *,
        start: Key | None = None,
        end: Key | None = None,
        limit: int | None = None,
        reverse: bool = False,
        batch_size: int | None = None,
        consistency: Consistency = "strong",
        cursor: str | None = None,
    ) -> ListIterator:
        if limit is not None and limit <= 0:
            raise KvValidationError("limit must be greater than 0")
        if batch_size is not None and batch_size <= 0:
            raise KvValidationError("batchSize must be greater than 0")
        bounds = selector_bounds(
            None if prefix is None else _key(prefix),
            None if start is None else _key(start),
            None if end is None else _key(end),
        )
        if batch_size is None:
            batch_size = min(limit or 100, 500)
        return ListIterator(self, bounds, limit, reverse, batch_size, consistency, cursor)

    async def _read(
        self, ranges: builtins.list[ReadRange], consistency: Consistency
    ) -> builtins.list[builtins.list[Entry]]:
        self._check_open()
        return await self._backend.snapshot_read(ranges, consistency)

    # -- writes -----------------------------------------------------------------

    async def set(self, key: SetKey, value: Any, *, expire_in: int | None = None) -> CommitResult:
        return await self.atomic().set(key, value, expire_in=expire_in).commit()

    async def delete(self, key: Key) -> None:
        await self.atomic().delete(key).commit()

    def atomic(self) -> AtomicOperation:
        return AtomicOperation(self)

    def commit_versionstamp(self) -> _CommitVersionstamp:
        return COMMIT_VERSIONSTAMP

    async def enqueue(
        self,
        value: Any,
        *,
        delay: int = 0,
        keys_if_undelivered: Sequence[Key] = (),
        backoff_schedule: Sequence[int] | None = None,
    ) -> CommitResult:
        op = self.atomic().enqueue(
            value,
            delay=delay,
            keys_if_undelivered=keys_if_undelivered,
            backoff_schedule=backoff_schedule,
        )
        return await op.commit()

    async def _write(self, write: AtomicWrite) -> CommitResult:
        self._check_open()
        result = await self._backend.atomic_write(write)
        if result.status is WriteStatus.SUCCESS:
            return CommitResult(True, result.versionstamp.hex())
        if result.status is WriteStatus.CHECK_FAILURE:
            return CommitResult(False, failed_checks=result.failed_checks)
        raise KvWriteDisabledError()

    # -- watch and queues -----------------------------------------------------------

    async def watch(self, keys: Sequence[Key]) -> AsyncGenerator[builtins.list[KvEntry], None]:
        """Yield the entries of `keys` now, then each time one of them changes."""
        if len(keys) > L.MAX_WATCHED_KEYS:
            raise KvValidationError(f"Too many keys (max {L.MAX_WATCHED_KEYS})")
        raws = [_read_key(k) for k in keys]
        self._check_open()
        tuples = [tuple(k) for k in keys]
        last: list[str | None] | None = None
        async for entries in self._backend.watch(raws):
            out = [_entry(k, e) for k, e in zip(tuples, entries, strict=True)]
            stamps = [e.versionstamp for e in out]
            if stamps != last:
                last = stamps
                yield out

    async def listen_queue(self, handler: Callable[[Any], Awaitable[None] | None]) -> None:
        """Deliver queued messages to `handler` until the database is closed.

        A handler that raises is retried on the message's backoff schedule; a
        message that exhausts it is written to its `keys_if_undelivered`.
        """
        self._check_open()

        async def deliver(payload: bytes) -> None:
            outcome = handler(decode_value(payload, ValueEncoding.V8))
            if outcome is not None:
                await outcome

        await self._backend.listen_queue(deliver)

    # -- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise KvClosedError()

    async def __aenter__(self) -> Kv:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ListIterator:
    """Async iterator over a list selector; `cursor` resumes after the last entry yielded."""

    def __init__(
        self,
        kv: Kv,
        bounds: Bounds,
        limit: int | None,
        reverse: bool,
        batch_size: int,
        consistency: Consistency,
        cursor: str | None,
    ) -> None:
        self._kv = kv
        self._bounds = bounds
        self._remaining = limit
        self._reverse = reverse
        self._batch = batch_size
        self._consistency = consistency
        self._start, self._end = (
            resume(bounds, cursor, reverse) if cursor else (bounds.start, bounds.end)
        )
        self._buffer: list[Entry] = []
        self._done = False
        self._last_key: bytes | None = None
        self._initial_cursor = cursor

    @property
    def cursor(self) -> str:
        if self._last_key is None:
            return self._initial_cursor or ""
        return encode_cursor(self._bounds, self._last_key)

    def __aiter__(self) -> ListIterator:
        return self

    async def __anext__(self) -> KvEntry:
        if not self._buffer:
            await self._fill()
        if not self._buffer:
            raise StopAsyncIteration
        e = self._buffer.pop(0)
        self._last_key = e.key
        if self._remaining is not None:
            self._remaining -= 1
        return _entry(decode_key(e.key), e)

    async def _fill(self) -> None:
        if self._done or self._remaining == 0:
            return
        batch = self._batch if self._remaining is None else min(self._batch, self._remaining)
        (rows,) = await self._kv._read(
            [ReadRange(self._start, self._end, batch, self._reverse)], self._consistency
        )
        if len(rows) < batch:
            self._done = True
        if rows:
            if self._reverse:
                self._end = rows[-1].key
            else:
                self._start = rows[-1].key + b"\x00"
        self._buffer = rows


class AtomicOperation:
    """Checks, mutations and enqueues committed together, or not at all."""

    def __init__(self, kv: Kv) -> None:
        self._kv = kv
        self._checks: list[Check] = []
        self._mutations: list[Mutation] = []
        self._enqueues: list[Enqueue] = []

    def check(self, *checks: KvEntry | tuple[Key, str | None]) -> AtomicOperation:
        """Each check holds when the key's versionstamp is the one given (None: absent)."""
        for c in checks:
            key, stamp = (c.key, c.versionstamp) if isinstance(c, KvEntry) else c
            raw = _write_key(key)
            if stamp is not None and (len(stamp) != 20 or not _is_hex(stamp)):
                raise KvValidationError("invalid versionstamp")
            self._checks.append(Check(raw, None if stamp is None else bytes.fromhex(stamp)))
        return self

    def set(self, key: SetKey, value: Any, *, expire_in: int | None = None) -> AtomicOperation:
        kind = MutationKind.SET
        if key and key[-1] is COMMIT_VERSIONSTAMP:
            kind = MutationKind.SET_SUFFIX_VERSIONSTAMPED_KEY
            key = key[:-1]
        data, encoding = _value(value)
        expire_at = NO_EXPIRY if expire_in is None else _expire_at(expire_in)
        # A marker anywhere but last is refused by encode_key (unsupported key part type).
        raw = _write_key(cast(Key, key))
        self._mutations.append(Mutation(raw, kind, data, encoding, expire_at))
        return self

    def delete(self, key: Key) -> AtomicOperation:
        self._mutations.append(Mutation(_write_key(key), MutationKind.DELETE))
        return self

    def sum(self, key: Key, n: int | KvU64) -> AtomicOperation:
        return self._u64(key, MutationKind.SUM, n)

    def min(self, key: Key, n: int | KvU64) -> AtomicOperation:
        return self._u64(key, MutationKind.MIN, n)

    def max(self, key: Key, n: int | KvU64) -> AtomicOperation:
        return self._u64(key, MutationKind.MAX, n)

    def _u64(self, key: Key, kind: MutationKind, n: int | KvU64) -> AtomicOperation:
        value = n if isinstance(n, KvU64) else KvU64(n)
        data, encoding = encode_value(value)
        self._mutations.append(Mutation(_write_key(key), kind, data, encoding))
        return self

    def mutate(self, *mutations: Mutation) -> AtomicOperation:
        """Add raw engine mutations (keys already encoded), e.g. a V8 sum with bounds."""
        self._mutations.extend(mutations)
        return self

    def enqueue(
        self,
        value: Any,
        *,
        delay: int = 0,
        keys_if_undelivered: Sequence[Key] = (),
        backoff_schedule: Sequence[int] | None = None,
    ) -> AtomicOperation:
        _check_delay(delay)
        if backoff_schedule is not None:
            if len(backoff_schedule) > MAX_BACKOFF_INTERVALS:
                raise KvValidationError(
                    f"Invalid backoffSchedule, max {MAX_BACKOFF_INTERVALS} intervals allowed"
                )
            for index, interval in enumerate(backoff_schedule):
                if not _is_number(interval) or not 0 <= interval <= L.MAX_QUEUE_BACKOFF_MS:
                    raise KvValidationError(
                        f"Invalid backoffSchedule, interval at index {index} is invalid"
                    )
        payload = encode_v8(value)
        if len(payload) > L.MAX_VALUE_SIZE:
            raise KvValidationError(f"enqueue payload too large (max {L.MAX_VALUE_SIZE} bytes)")
        self._enqueues.append(
            Enqueue(
                payload,
                int(time.time() * 1000) + int(delay),
                tuple(_write_key(k) for k in keys_if_undelivered),
                None if backoff_schedule is None else tuple(int(b) for b in backoff_schedule),
            )
        )
        return self

    async def commit(self) -> CommitResult:
        self._validate_totals()
        write = AtomicWrite(tuple(self._checks), tuple(self._mutations), tuple(self._enqueues))
        return await self._kv._write(write)

    def _validate_totals(self) -> None:
        if len(self._checks) > MAX_CLIENT_CHECKS:
            raise KvValidationError(f"Too many checks (max {MAX_CLIENT_CHECKS})")
        if len(self._mutations) + len(self._enqueues) > L.MAX_MUTATIONS:
            raise KvValidationError(f"Too many mutations (max {L.MAX_MUTATIONS})")
        key_size = sum(len(c.key) for c in self._checks) + sum(len(m.key) for m in self._mutations)
        if key_size > MAX_TOTAL_KEY_SIZE:
            raise KvValidationError(f"Total key size too large (max {MAX_TOTAL_KEY_SIZE} bytes)")
        total = (
            sum(len(c.key) for c in self._checks)
            + sum(2 * len(m.key) + len(m.value) for m in self._mutations)
            + sum(len(e.payload) + 4 * len(e.backoff_schedule or ()) for e in self._enqueues)
        )
        if total > L.MAX_TOTAL_MUTATION_SIZE:
            raise KvValidationError(
                f"Total mutation size too large (max {L.MAX_TOTAL_MUTATION_SIZE} bytes)"
            )


def _expire_at(expire_in: Any) -> int:
    """Deno's checks and texts for `expireIn` (a whole number of ms, not too far ahead)."""
    valid = _is_number(expire_in) and expire_in >= 0 and float(expire_in).is_integer()
    if not valid:
        raise KvValidationError(
            f"expireIn must be a non-negative integer: received {_js_number(expire_in)}"
        )
    expire_at = int(time.time() * 1000) + int(expire_in)
    if expire_at > MAX_TIMESTAMP_MS:
        raise KvValidationError(f"Invalid mutation: expireIn is too large: {_js_number(expire_in)}")
    return max(1, expire_at)


def _check_delay(delay: Any) -> None:
    if not _is_number(delay):
        raise KvValidationError(f"Delay must be a number: received {delay!r}")
    if delay != delay:
        raise KvValidationError("Delay cannot be NaN")
    if delay < 0:
        raise KvValidationError(f"Delay must be >= 0: received {_js_number(delay)}")
    if delay > L.MAX_QUEUE_DELAY_MS:
        raise KvValidationError(
            f"Delay cannot be greater than 30 days: received {_js_number(delay)}"
        )


def _is_number(n: Any) -> bool:
    return isinstance(n, int | float) and not isinstance(n, bool)


def _js_number(n: Any) -> str:
    """A number as JavaScript prints it (1e19 as 10000000000000000000, nan as NaN)."""
    if isinstance(n, float):
        if n != n:
            return "NaN"
        if n.is_integer() and abs(n) < 1e21:
            return str(int(n))
    return str(n)


def _value(value: Any) -> tuple[bytes, int]:
    data, encoding = encode_value(value)
    if len(data) > L.MAX_VALUE_SIZE:
        raise KvValidationError(f"Value too large (max {L.MAX_VALUE_SIZE} bytes)")
    return data, encoding


def _is_hex(s: str) -> bool:
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return True
