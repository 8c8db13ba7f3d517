"""Queue delivery on the engine: dequeue, settle, retry, dead letters, crash recovery.

Messages live in Deno's `queue` / `queue_running` tables (KV_FACTS §9). Each
function here is a writer job (`Engine.run`): it changes the tables through
`denokv.tables` inside the writer's transaction and records every change on the
`Tx`, so queue state is captured for backups like any other commit and dead
letters wake watchers. Differences from upstream, on purpose: a message in
flight has its deadline pushed forward while its handler runs (upstream's
keepalive never takes effect, so slow handlers are delivered twice), dead-letter
writes notify watchers, and every queue step is a commit of its own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace

from denokv import tables
from denokv.effects import QueueChangeKind
from denokv.operations import NO_EXPIRY, ValueEncoding
from denokv.tables import QueueRow
from denokv.writer import Tx

LEASE_MS = 5_000  # how long a delivery may run before it is presumed lost
RECOVERY_BATCH = 100


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    payload: bytes
    deadline_ms: int


def dequeue(tx: Tx) -> Delivery | None:
    """Move the oldest due message to `queue_running` and hand it out."""
    row = tables.first_due(tx.conn, tx.now_ms)
    if row is None:
        return None
    leased = replace(row, ts=tx.now_ms + LEASE_MS)
    tables.delete_queued(tx.conn, row)
    tables.put_running(tx.conn, leased)
    tx.new_version()
    tx.effects.queue(QueueChangeKind.QUEUE_DELETE, row)
    tx.effects.queue(QueueChangeKind.RUNNING_PUT, leased)
    return Delivery(row.id, row.data, leased.ts)


def next_due(tx: Tx) -> int | None:
    return tables.next_due(tx.conn)


def extend_lease(tx: Tx, msg_id: str) -> None:
    """The handler is still running: keep the message from being presumed lost."""
    row = tables.running(tx.conn, msg_id)
    if row is None:
        return
    leased = replace(row, ts=tx.now_ms + LEASE_MS)
    tables.delete_running(tx.conn, row)
    tables.put_running(tx.conn, leased)
    tx.new_version()
    tx.effects.queue(QueueChangeKind.RUNNING_DELETE, row)
    tx.effects.queue(QueueChangeKind.RUNNING_PUT, leased)


def settle(tx: Tx, msg_id: str, success: bool) -> None:
    """A delivery ended: forget the message, or retry it, or write its dead letters."""
    row = tables.running(tx.conn, msg_id)
    if row is None:  # already recovered and retried by someone else
        return
    _finish(tx, row)
    if not success:
        _retry_or_dead_letter(tx, row)


def recover_lost(tx: Tx) -> None:
    """Messages whose lease ran out (e.g. the process died mid-delivery) count as failed."""
    for row in tables.lost_running(tx.conn, tx.now_ms, RECOVERY_BATCH):
        _finish(tx, row)
        _retry_or_dead_letter(tx, row)


def _finish(tx: Tx, row: QueueRow) -> None:
    tables.delete_running(tx.conn, row)
    tx.new_version()
    tx.effects.queue(QueueChangeKind.RUNNING_DELETE, row)


def _retry_or_dead_letter(tx: Tx, row: QueueRow) -> None:
    schedule = json.loads(row.backoff_schedule)
    if schedule:
        retry = QueueRow(
            ts=tx.now_ms + schedule[0],
            id=str(uuid.uuid4()),
            data=row.data,
            backoff_schedule=json.dumps(schedule[1:], separators=(",", ":")),
            keys_if_undelivered=row.keys_if_undelivered,
        )
        tables.insert_queued(tx.conn, retry)
        tx.effects.queue(QueueChangeKind.QUEUE_PUT, retry)
        return
    keys = [bytes(k) for k in json.loads(row.keys_if_undelivered)]
    version = tx.new_version()
    for key in keys:
        tables.upsert(tx.conn, key, row.data, int(ValueEncoding.V8), version, NO_EXPIRY)
        tx.effects.set_key(key, row.data, int(ValueEncoding.V8), NO_EXPIRY)
    tx.effects.touched += keys
