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

from denokv import tables
from denokv import versionstamp as stamps
from denokv.effects import Effects, QueueChangeKind
from denokv.engine_errors import WriteError
from denokv.limits import DEFAULT_BACKOFF_SCHEDULE
from denokv.operations import (
    NO_EXPIRY,
    AtomicWrite,
    Check,
    Enqueue,
    Mutation,
    MutationKind,
    ValueEncoding,
)
from denokv.v8_sum import SumError, v8_sum

_U64 = (1 << 64) - 1


def failed_checks(conn: sqlite3.Connection, checks: tuple[Check, ...], now_ms: int) -> list[int]:
    """Indexes of checks that do not hold; an expired key counts as absent."""
    return [
        index
        for index, check in enumerate(checks)
        if tables.live_versionstamp(conn, check.key, now_ms) != check.versionstamp
    ]


def apply_write(conn: sqlite3.Connection, write: AtomicWrite, version: int, now_ms: int) -> Effects:
    """Run the mutations and enqueues of a write whose checks passed."""
    effects = Effects()
    stamp = stamps.from_version(version)
    for enqueue in write.enqueues:
        _insert_enqueue(conn, enqueue, effects)
    for mutation in write.mutations:
        _apply_mutation(conn, mutation, version, stamp, now_ms, effects)
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
        tables.upsert(conn, key, m.value, m.encoding, version, m.expire_at_ms)
        effects.set_key(key, m.value, m.encoding, m.expire_at_ms)
    elif kind is MutationKind.DELETE:
        tables.delete(conn, key)
        effects.delete_key(key)
    else:
        current = tables.live_value(conn, key, now_ms)
        data, encoding = _combine(kind, current, m)
        tables.upsert(conn, key, data, encoding, version, NO_EXPIRY)
        effects.set_key(key, data, encoding, NO_EXPIRY)
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


def _insert_enqueue(conn: sqlite3.Connection, enqueue: Enqueue, effects: Effects) -> None:
    schedule = enqueue.backoff_schedule
    if schedule is None:
        schedule = DEFAULT_BACKOFF_SCHEDULE
    row = tables.QueueRow(
        ts=enqueue.deadline_ms,
        id=str(uuid.uuid4()),
        data=enqueue.payload,
        backoff_schedule=json.dumps(list(schedule), separators=(",", ":")),
        keys_if_undelivered=json.dumps(
            [list(k) for k in enqueue.keys_if_undelivered], separators=(",", ":")
        ),
    )
    tables.insert_queued(conn, row)
    effects.queue(QueueChangeKind.QUEUE_PUT, row)
