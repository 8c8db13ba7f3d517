"""The engine's own check of a write before it is queued for the writer.

The server's protobuf conversion and the Python client check their input with
the texts their clients know (upstream's, Deno's); this is the last gate, which
every path passes (KV Connect, the embedded client, the console). It makes sure
that every number bound for SQLite fits its column and every field has the
shape the writer assumes, so a bad value is refused with a clear error
(HTTP 400 / `KvValidationError`) instead of raising inside the writer's
transaction.
"""

from __future__ import annotations

from denokv import limits as L
from denokv import texts as T
from denokv.engine_errors import WriteError
from denokv.operations import NO_EXPIRY, AtomicWrite, Enqueue, Mutation, MutationKind, ValueEncoding

# The latest instant Deno accepts for an expiry or a queue deadline
# (+262143-12-31T23:59:59.999Z, the end of chrono's date range).
MAX_TIMESTAMP_MS = 8_210_266_876_799_999

# Deno's own engine takes up to 100 checks per atomic operation (KV_FACTS §17).
MAX_CHECKS = 100

_ENCODINGS = frozenset(int(e) for e in ValueEncoding)
_KINDS = frozenset(MutationKind)


def check_write(write: AtomicWrite) -> None:
    """Raise WriteError naming the first field the writer could not store."""
    if len(write.checks) > MAX_CHECKS:
        raise WriteError(T.TOO_MANY_CHECKS)
    if len(write.mutations) + len(write.enqueues) > L.MAX_MUTATIONS:
        raise WriteError(T.TOO_MANY_MUTATIONS)
    for check in write.checks:
        _check_key(check.key, L.MAX_READ_KEY_SIZE)
        stamp = check.versionstamp
        if stamp is not None and (not isinstance(stamp, bytes) or len(stamp) != 10):
            raise WriteError(T.INVALID_VERSIONSTAMP)
    for mutation in write.mutations:
        _check_mutation(mutation)
    for enqueue in write.enqueues:
        _check_enqueue(enqueue)


def _check_key(key: object, limit: int) -> None:
    if not isinstance(key, bytes) or len(key) > limit:
        raise WriteError(T.KEY_TOO_LARGE if isinstance(key, bytes) else T.INVALID_MUTATION)


def _check_mutation(m: Mutation) -> None:
    _check_key(m.key, L.MAX_WRITE_KEY_SIZE)
    if m.kind not in _KINDS:
        raise WriteError(T.INVALID_MUTATION)
    if not isinstance(m.value, bytes):
        raise WriteError(T.INVALID_MUTATION)
    if len(m.value) > L.MAX_VALUE_SIZE:
        raise WriteError(T.VALUE_TOO_LARGE)
    if m.kind is not MutationKind.DELETE:
        if not _is_int(m.encoding) or m.encoding not in _ENCODINGS:
            raise WriteError(T.INVALID_VALUE_ENCODING.format(n=m.encoding))
        if m.encoding == ValueEncoding.LE64 and len(m.value) != 8:
            raise WriteError(T.INVALID_LE64)
    expire = m.expire_at_ms
    if not _is_int(expire) or not (expire == NO_EXPIRY or 0 < expire <= MAX_TIMESTAMP_MS):
        raise WriteError(T.INVALID_EXPIRE_AT)
    if not isinstance(m.sum_min, bytes) or not isinstance(m.sum_max, bytes):
        raise WriteError(T.INVALID_MUTATION)


def _check_enqueue(e: Enqueue) -> None:
    if not isinstance(e.payload, bytes):
        raise WriteError(T.INVALID_MUTATION)
    if len(e.payload) > L.MAX_VALUE_SIZE:
        raise WriteError(T.VALUE_TOO_LARGE)
    if not _is_int(e.deadline_ms) or not 0 <= e.deadline_ms <= MAX_TIMESTAMP_MS:
        raise WriteError(T.INVALID_DEADLINE)
    if len(e.keys_if_undelivered) > L.MAX_QUEUE_UNDELIVERED_KEYS:
        raise WriteError(T.TOO_MANY_UNDELIVERED_KEYS)
    for key in e.keys_if_undelivered:
        _check_key(key, L.MAX_WRITE_KEY_SIZE)
    schedule = e.backoff_schedule
    if schedule is not None:
        if len(schedule) > L.MAX_QUEUE_BACKOFF_INTERVALS:
            raise WriteError(T.TOO_MANY_BACKOFF_INTERVALS)
        for interval in schedule:
            if not _is_int(interval) or not 0 <= interval <= L.MAX_QUEUE_BACKOFF_MS:
                raise WriteError(T.BACKOFF_TOO_LARGE)


def _is_int(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)
