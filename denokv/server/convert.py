"""KV Connect protobuf messages <-> engine operations, with the server's limits.

Validation runs in upstream's order so the first failure reported is the same
one upstream reports (KV_FACTS §4.2, §5, §6). Where upstream answers 500 or
drops the connection on bad input, we answer 400: Deno retries 5xx forever.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import TypeVar, cast

from denokv import limits as L
from denokv import texts as T
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
    WriteResult,
)
from denokv.proto import datapath_pb2 as pb
from denokv.server.errors import bad_request
from denokv.tables import LiveRow

_T = TypeVar("_T")
_KINDS = {int(k): k for k in MutationKind}
_NEEDS_VALUE = frozenset(
    {
        MutationKind.SET,
        MutationKind.SUM,
        MutationKind.MIN,
        MutationKind.MAX,
        MutationKind.SET_SUFFIX_VERSIONSTAMPED_KEY,
    }
)
_ENCODINGS = frozenset(int(e) for e in ValueEncoding)
# A client clock may run a little ahead of ours; allow for it on queue deadlines.
_CLOCK_SKEW_MS = 10 * 60 * 1000


def _items(repeated: Sequence[_T]) -> list[_T]:
    """A repeated protobuf field as a list. Iterating the field itself ends the
    way old sequences do, by an IndexError whose message is formatted every
    time (1.2k of the 112k instructions of a kv.get); a slice is one C call."""
    return repeated[:]  # type: ignore[return-value]


def read_ranges(msg: pb.SnapshotRead) -> list[ReadRange]:
    # Every read passes here: each protobuf field is fetched once (a fetch builds
    # a new Python object each time), and repeated fields are sliced: see _items.
    ranges = _items(msg.ranges)
    if len(ranges) > L.MAX_READ_RANGES:
        raise bad_request(T.TOO_MANY_RANGES)
    total = 0
    out = []
    for r in ranges:
        limit, start, end = r.limit, r.start, r.end
        if limit < 1:
            raise bad_request(T.INVALID_LIMIT)
        if len(start) > L.MAX_READ_KEY_SIZE or len(end) > L.MAX_READ_KEY_SIZE:
            raise bad_request(T.KEY_TOO_LARGE)
        total += limit
        out.append(ReadRange(start, end, limit, r.reverse))
    if total > L.MAX_READ_ENTRIES:
        raise bad_request(T.TOO_MANY_ENTRIES)
    return out


def watch_keys(msg: pb.Watch) -> list[bytes]:
    watched = _items(msg.keys)
    if len(watched) > L.MAX_WATCHED_KEYS:
        raise bad_request(T.TOO_MANY_WATCH_KEYS)
    keys = [k.key for k in watched]
    if any(len(k) > L.MAX_WRITE_KEY_SIZE for k in keys):
        raise bad_request(T.KEY_TOO_LARGE)
    return keys


def atomic_write(msg: pb.AtomicWrite, now_ms: int | None = None) -> AtomicWrite:
    msg_checks, msg_mutations, msg_enqueues = (
        _items(msg.checks),
        _items(msg.mutations),
        _items(msg.enqueues),
    )
    if len(msg_checks) > L.MAX_CHECKS:
        raise bad_request(T.TOO_MANY_CHECKS)
    if len(msg_mutations) + len(msg_enqueues) > L.MAX_MUTATIONS:
        raise bad_request(T.TOO_MANY_MUTATIONS)
    total = 0
    checks = []
    for c in msg_checks:
        if len(c.key) > L.MAX_READ_KEY_SIZE:
            raise bad_request(T.KEY_TOO_LARGE)
        n = len(c.versionstamp)
        if n not in (0, 10):
            raise bad_request(T.INVALID_VERSIONSTAMP)
        total += len(c.key)
        checks.append(Check(c.key, c.versionstamp if n else None))
    mutations = []
    for m in msg_mutations:
        mutation, size = _mutation(m)
        total += size
        mutations.append(mutation)
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    enqueues = []
    for e in msg_enqueues:
        enqueue, size = _enqueue(e, now_ms)
        total += size
        enqueues.append(enqueue)
    if total > L.MAX_TOTAL_MUTATION_SIZE:
        raise bad_request(T.WRITE_TOO_LARGE)
    return AtomicWrite(tuple(checks), tuple(mutations), tuple(enqueues))


def _mutation(m: pb.Mutation) -> tuple[Mutation, int]:
    if len(m.key) > L.MAX_WRITE_KEY_SIZE:
        raise bad_request(T.KEY_TOO_LARGE)
    has_value = m.HasField("value")
    data = m.value.data if has_value else b""
    if len(data) > L.MAX_VALUE_SIZE:
        raise bad_request(T.VALUE_TOO_LARGE)
    kind = _KINDS.get(m.mutation_type)
    if kind is None or (kind in _NEEDS_VALUE and not has_value):
        raise bad_request(T.INVALID_MUTATION)
    encoding = m.value.encoding if has_value else ValueEncoding.V8
    if kind is not MutationKind.DELETE:
        if encoding not in _ENCODINGS:
            raise bad_request(T.INVALID_VALUE_ENCODING.format(n=encoding))
        if encoding == ValueEncoding.LE64 and len(data) != 8:
            raise bad_request(T.INVALID_LE64)
    expire_at = m.expire_at_ms
    if expire_at <= -2:
        raise bad_request(T.INVALID_EXPIRE_AT)
    if expire_at == 0:
        expire_at = NO_EXPIRY
    mutation = Mutation(
        key=m.key,
        kind=kind,
        value=data,
        encoding=encoding,
        expire_at_ms=expire_at,
        sum_min=m.sum_min,
        sum_max=m.sum_max,
        sum_clamp=m.sum_clamp,
    )
    return mutation, len(m.key) + len(data)


def _enqueue(e: pb.Enqueue, now_ms: int) -> tuple[Enqueue, int]:
    if len(e.payload) > L.MAX_VALUE_SIZE:
        raise bad_request(T.VALUE_TOO_LARGE)
    size = len(e.payload)
    undelivered = _items(e.keys_if_undelivered)
    if len(undelivered) > L.MAX_QUEUE_UNDELIVERED_KEYS:
        raise bad_request(T.TOO_MANY_UNDELIVERED_KEYS)
    for key in undelivered:
        if len(key) > L.MAX_WRITE_KEY_SIZE:
            raise bad_request(T.KEY_TOO_LARGE)
        size += len(key)
    schedule = _items(e.backoff_schedule)
    if len(schedule) > L.MAX_QUEUE_BACKOFF_INTERVALS:
        raise bad_request(T.TOO_MANY_BACKOFF_INTERVALS)
    for interval in schedule:
        if interval > L.MAX_QUEUE_BACKOFF_MS:
            raise bad_request(T.BACKOFF_TOO_LARGE)
        size += 4
    # Upstream rejects deadlines far in the past and accepts any future one
    # (an inverted check). A past deadline only means "deliver now"; what a
    # client cannot ask for is a delay beyond the 30-day maximum.
    if e.deadline_ms < 0 or e.deadline_ms > now_ms + L.MAX_QUEUE_DELAY_MS + _CLOCK_SKEW_MS:
        raise bad_request(T.INVALID_DEADLINE)
    enqueue = Enqueue(
        payload=e.payload,
        deadline_ms=e.deadline_ms,
        keys_if_undelivered=tuple(undelivered),
        # Over KV Connect an empty schedule means "the default".
        backoff_schedule=tuple(schedule) or None,
    )
    return enqueue, size


def read_output(results: list[list[LiveRow]], strongly_consistent: bool = True) -> bytes:
    """`SnapshotReadOutput` bytes for the engine's rows, encoded by hand: every read's hot path.

    Byte for byte what the protobuf library writes (fields in number order,
    proto3 defaults left out); `tests/test_convert.py` checks that.
    """
    parts = []
    for rows in results:
        values = b"".join([_entry(*row) for row in rows])
        parts.append(b"\x0a" + _varint(len(values)) + values)
    parts.append(_READ_TAIL_STRONG if strongly_consistent else _READ_TAIL_EVENTUAL)
    return b"".join(parts)


def write_output(result: WriteResult) -> bytes:
    """`AtomicWriteOutput` bytes, encoded by hand like `read_output`."""
    out = b"\x08" + _varint(int(result.status)) if result.status else b""
    if result.versionstamp:
        out += _embedded(2, result.versionstamp)
    if result.failed_checks:
        out += _embedded(4, b"".join([_varint(i) for i in result.failed_checks]))
    return out


# read_is_strongly_consistent (4) = true when so, then status (8) = SR_SUCCESS.
_READ_TAIL_STRONG = b"\x20\x01\x40\x01"
_READ_TAIL_EVENTUAL = b"\x40\x01"
_SHORT = [bytes([n]) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _SHORT[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _embedded(field: int, payload: bytes) -> bytes:
    """A length-delimited field (bytes or a message); field numbers here are < 16."""
    return _SHORT[(field << 3) | 2] + _varint(len(payload)) + payload


def _entry(key: bytes, value: bytes, encoding: int, version: int, seq: int) -> bytes:
    """One KvEntry as the `values` field (1) of a ReadRangeOutput."""
    if encoding not in _ENCODINGS:
        raise bad_request(T.INVALID_VALUE_ENCODING.format(n=encoding))
    short = _SHORT
    if key and value and len(key) < 128 and len(value) < 128:  # the common case: one format
        size = len(key) + len(value) + 18  # 2 + key, 2 + value, 2 encoding, 12 versionstamp
        return _ENTRY % (
            short[size] if size < 128 else _varint(size),
            short[len(key)], key, short[len(value)], value, short[encoding],
            _STAMP.pack(_STAMP_HEAD, 10, version, seq),
        )  # fmt: skip
    # versionstamp (4): always 10 bytes
    stamp = b"\x22\x0a" + version.to_bytes(8, "big") + seq.to_bytes(2, "big")
    body = (
        (_embedded(1, key) if key else b"")
        + (_embedded(2, value) if value else b"")
        + b"\x18" + _varint(encoding) + stamp
    )  # fmt: skip
    return b"\x0a" + _varint(len(body)) + body


# values (1) { key (1), value (2), encoding (3), versionstamp (4) }, short lengths
_ENTRY = b"\x0a%b\x0a%b%b\x12%b%b\x18%b%b"
_STAMP = struct.Struct(">BBQH")  # tag of field 4, length 10, version, seq
_STAMP_HEAD = 0x22


def watch_output(entries: list[Entry | None]) -> bytes:
    out = pb.WatchOutput(status=pb.SR_SUCCESS)
    for entry in entries:
        key_out = out.keys.add(changed=True)
        if entry is not None:
            _check_stored_encoding(entry.encoding)
            key_out.entry_if_changed.CopyFrom(
                pb.KvEntry(
                    key=entry.key,
                    value=entry.value,
                    encoding=cast("pb.ValueEncoding", entry.encoding),
                    versionstamp=entry.versionstamp,
                )
            )
    return out.SerializeToString()


def _check_stored_encoding(encoding: int) -> None:
    if encoding not in _ENCODINGS:
        raise bad_request(T.INVALID_VALUE_ENCODING.format(n=encoding))
