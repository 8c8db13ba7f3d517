"""Applying one atomic write inside the writer's open transaction.

Checks, mutations and enqueues of a write run against the writer connection
while a SAVEPOINT is open; the caller rolls the savepoint back when anything
here raises, so a failing write leaves no trace (upstream commits the partial
effects; KV_FACTS §4.3).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field

from denokv.limits import DEFAULT_BACKOFF_SCHEDULE
from denokv.operations import (
    NO_EXPIRY,
    AtomicWrite,
    Check,
    Enqueue,
    Mutation,
    MutationKind,
    ValueEncoding,
    WriteError,
    versionstamp,
)
from denokv.v8_sum import SumError, v8_sum

_U64 = (1 << 64) - 1

SELECT_VERSION = "select version, expiration_ms from kv where k = ?"
SELECT_VALUE = "select v, v_encoding, expiration_ms from kv where k = ?"
UPSERT = (
    "insert into kv (k, v, v_encoding, version, expiration_ms) values (?, ?, ?, ?, ?) "
    "on conflict(k) do update set v = excluded.v, v_encoding = excluded.v_encoding, "
    "version = excluded.version, expiration_ms = excluded.expiration_ms"
)
DELETE = "delete from kv where k = ?"
INSERT_QUEUE = (
    "insert into queue (ts, id, data, backoff_schedule, keys_if_undelivered) "
    "values (?, ?, ?, ?, ?)"
)


@dataclass(slots=True)
class Effects:
    """What a committed write did, for watchers, the expiry timer and the redo log."""

    touched: list[bytes] = field(default_factory=list)  # keys as the client named them
    changes: list[tuple[bytes, bytes | None, int, int]] = field(default_factory=list)
    earliest_expiry: int | None = None
    enqueued: int = 0


def is_live(expiration_ms: int, now_ms: int) -> bool:
    return expiration_ms < 0 or expiration_ms > now_ms


def failed_checks(conn: sqlite3.Connection, checks: tuple[Check, ...], now_ms: int) -> list[int]:
    """Indexes of checks that do not hold; an expired key counts as absent."""
    failed = []
    for index, check in enumerate(checks):
        row = conn.execute(SELECT_VERSION, (check.key,)).fetchone()
        current = versionstamp(row[0]) if row and is_live(row[1], now_ms) else None
        if current != check.versionstamp:
            failed.append(index)
    return failed


def apply_write(
    conn: sqlite3.Connection, write: AtomicWrite, version: int, now_ms: int
) -> Effects:
    """Run the mutations and enqueues of a write whose checks passed."""
    effects = Effects()
    stamp = versionstamp(version)
    for mutation in write.mutations:
        _apply_mutation(conn, mutation, version, stamp, now_ms, effects)
    for enqueue in write.enqueues:
        _insert_enqueue(conn, enqueue)
        effects.enqueued += 1
    return effects


def _apply_mutation(
    conn: sqlite3.Connection,
    m: Mutation,
    version: int,
    stamp: bytes,
    now_ms: int,
    effects: Effects,
) -> None:
    kind = m.kind
    key = m.key
    if kind is MutationKind.SET or kind is MutationKind.SET_SUFFIX_VERSIONSTAMPED_KEY:
        if kind is MutationKind.SET_SUFFIX_VERSIONSTAMPED_KEY:
            key = key + b"\x02" + stamp.hex().encode() + b"\x00"
        conn.execute(UPSERT, (key, m.value, m.encoding, version, m.expire_at_ms))
        effects.changes.append((key, m.value, m.encoding, m.expire_at_ms))
        if m.expire_at_ms >= 0 and (
            effects.earliest_expiry is None or m.expire_at_ms < effects.earliest_expiry
        ):
            effects.earliest_expiry = m.expire_at_ms
    elif kind is MutationKind.DELETE:
        conn.execute(DELETE, (key,))
        effects.changes.append((key, None, 0, NO_EXPIRY))
    else:
        row = conn.execute(SELECT_VALUE, (key,)).fetchone()
        current = (row[0], row[1]) if row and is_live(row[2], now_ms) else None
        data, encoding = _combine(kind, current, m)
        conn.execute(UPSERT, (key, data, encoding, version, NO_EXPIRY))
        effects.changes.append((key, data, encoding, NO_EXPIRY))
    # Watchers of a versionstamped key listen on the key the client sent.
    effects.touched.append(m.key)


def _combine(
    kind: MutationKind, current: tuple[bytes, int] | None, m: Mutation
) -> tuple[bytes, int]:
    name = kind.name.lower()
    if kind is MutationKind.SUM and m.encoding != ValueEncoding.LE64:
        try:
            return v8_sum(current, m.value, m.encoding, m.sum_min, m.sum_max, m.sum_clamp)
        except SumError as exc:
            raise WriteError(str(exc)) from exc
    if m.encoding != ValueEncoding.LE64:
        raise WriteError(f"Failed to perform '{name}' mutation on a non-U64 operand")
    if current is None:
        return m.value, ValueEncoding.LE64
    data, encoding = current
    if encoding != ValueEncoding.LE64 or len(data) != 8:
        raise WriteError(f"Failed to perform '{name}' mutation on a non-U64 value in the database")
    old = int.from_bytes(data, "little")
    operand = int.from_bytes(m.value, "little")
    if kind is MutationKind.SUM:
        result = (old + operand) & _U64
    elif kind is MutationKind.MIN:
        result = min(old, operand)
    else:
        result = max(old, operand)
    return result.to_bytes(8, "little"), ValueEncoding.LE64


def _insert_enqueue(conn: sqlite3.Connection, enqueue: Enqueue) -> None:
    schedule = enqueue.backoff_schedule
    if schedule is None:
        schedule = DEFAULT_BACKOFF_SCHEDULE
    conn.execute(
        INSERT_QUEUE,
        (
            enqueue.deadline_ms,
            str(uuid.uuid4()),
            enqueue.payload,
            json.dumps(list(schedule), separators=(",", ":")),
            json.dumps([list(k) for k in enqueue.keys_if_undelivered], separators=(",", ":")),
        ),
    )
