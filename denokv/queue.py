"""Queue delivery on the engine: dequeue, settle, retry, dead letters, crash recovery.

Messages live in Deno's `queue` / `queue_running` tables (KV_FACTS §9). Each
function here runs on the writer thread (through `Writer.run_job`) inside one
transaction. Differences from upstream, on purpose: a message in flight has its
deadline pushed forward while its handler runs (upstream's keepalive never
takes effect, so slow handlers are delivered twice), and dead-letter writes
notify watchers like any other write.
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from denokv.mutations import UPSERT, Effects
from denokv.operations import NO_EXPIRY, ValueEncoding
from denokv.writer import CommitListener

LEASE_MS = 5_000  # how long a delivery may run before it is presumed lost
RECOVERY_BATCH = 100


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    payload: bytes
    deadline_ms: int


@dataclass(slots=True)
class Settled:
    """What settling a message changed: dead-letter keys written, next due time."""

    dead_letter_keys: list[bytes]
    version: int | None = None


def dequeue(conn: sqlite3.Connection, now_ms: int) -> Delivery | None:
    """Move the oldest due message to `queue_running` and hand it out."""
    conn.execute("begin immediate")
    try:
        row = conn.execute(
            "select ts, id, data, backoff_schedule, keys_if_undelivered from queue "
            "where ts <= ? order by ts limit 1",
            (now_ms,),
        ).fetchone()
        if row is None:
            conn.execute("commit")
            return None
        ts, msg_id, data, schedule, dead_keys = row
        deadline = now_ms + LEASE_MS
        conn.execute("delete from queue where ts = ? and id = ?", (ts, msg_id))
        conn.execute(
            "insert into queue_running (deadline, id, data, backoff_schedule, keys_if_undelivered)"
            " values (?, ?, ?, ?, ?)",
            (deadline, msg_id, data, schedule, dead_keys),
        )
        conn.execute("commit")
        return Delivery(msg_id, data, deadline)
    except BaseException:
        conn.execute("rollback")
        raise


def next_due(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("select min(ts) from queue").fetchone()
    return row[0]


def extend_lease(conn: sqlite3.Connection, msg_id: str, now_ms: int) -> None:
    """The handler is still running: keep the message from being presumed lost."""
    conn.execute(
        "update queue_running set deadline = ? where id = ?", (now_ms + LEASE_MS, msg_id)
    )


def settle(
    conn: sqlite3.Connection,
    msg_id: str,
    success: bool,
    now_ms: int,
    rng: random.Random,
    listeners: Sequence[CommitListener] = (),
) -> Settled:
    conn.execute("begin immediate")
    try:
        row = conn.execute(
            "select deadline, data, backoff_schedule, keys_if_undelivered "
            "from queue_running where id = ?",
            (msg_id,),
        ).fetchone()
        if row is None:  # already recovered and retried by someone else
            conn.execute("commit")
            return Settled([])
        conn.execute("delete from queue_running where id = ?", (msg_id,))
        settled = Settled([])
        if not success:
            settled = _retry_or_dead_letter(conn, row, now_ms, rng, listeners)
        conn.execute("commit")
        return settled
    except BaseException:
        conn.execute("rollback")
        raise


def recover_lost(
    conn: sqlite3.Connection,
    now_ms: int,
    rng: random.Random,
    listeners: Sequence[CommitListener] = (),
) -> Settled:
    """Messages whose lease ran out (e.g. the process died mid-delivery) count as failed."""
    conn.execute("begin immediate")
    try:
        total = Settled([])
        rows = conn.execute(
            "select deadline, data, backoff_schedule, keys_if_undelivered, id "
            "from queue_running where deadline <= ? limit ?",
            (now_ms, RECOVERY_BATCH),
        ).fetchall()
        for deadline, data, schedule, dead_keys, msg_id in rows:
            conn.execute("delete from queue_running where id = ?", (msg_id,))
            one = _retry_or_dead_letter(
                conn, (deadline, data, schedule, dead_keys), now_ms, rng, listeners
            )
            total.dead_letter_keys += one.dead_letter_keys
            total.version = one.version or total.version
        conn.execute("commit")
        return total
    except BaseException:
        conn.execute("rollback")
        raise


def _retry_or_dead_letter(
    conn: sqlite3.Connection,
    row: tuple[int, bytes, str, str | bytes],
    now_ms: int,
    rng: random.Random,
    listeners: Sequence[CommitListener],
) -> Settled:
    _, data, schedule_json, dead_keys_json = row
    schedule = json.loads(schedule_json)
    if schedule:
        conn.execute(
            "insert into queue (ts, id, data, backoff_schedule, keys_if_undelivered)"
            " values (?, ?, ?, ?, ?)",
            (now_ms + schedule[0], str(uuid.uuid4()), data, json.dumps(schedule[1:]),
             dead_keys_json),
        )  # fmt: skip
        return Settled([])
    keys = [bytes(k) for k in json.loads(dead_keys_json)]
    if not keys:
        return Settled([])
    version = conn.execute(
        "update data_version set version = version + ? where k = 0 returning version",
        (rng.randint(1, 9),),
    ).fetchone()[0]
    for key in keys:
        conn.execute(UPSERT, (key, data, int(ValueEncoding.V8), version, NO_EXPIRY))
    # Dead letters are commits like any other: the redo log (backups) must see them.
    effects = Effects(touched=list(keys))
    effects.changes = [(k, data, int(ValueEncoding.V8), NO_EXPIRY) for k in keys]
    for listener in listeners:
        listener(conn, version, effects)
    return Settled(keys, version)
