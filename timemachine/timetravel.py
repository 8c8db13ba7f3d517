"""Redo and undo logs on a replica's file: move the served state to any commit boundary.

Fetched log entries wait in the redo log. Checking out forward applies them in
versionstamp order, writing for each the previous state into the undo log;
checking out backward applies undo entries and moves them back to redo. A
checkout always ends on a commit boundary (a versionstamp ending in `ffff`):
forward rounds up to the next boundary, backward down to the previous one.
Entries are key changes or queue changes (a replica holds the primary's queue
without delivering it).

All functions run inside a transaction the caller owns, which on a live replica
is a writer job; they change Deno's tables only through `denokv.tables`, and the
caller stores the resulting version (`Tx.set_version`). A checkout moves at most
about `limit` entries per call and always stops on a boundary, so a long move
is a series of short commits, each leaving a state that existed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from denokv import tables
from denokv import versionstamp as stamps
from denokv.effects import replay_queue_change
from denokv.redo_log import decode_queue_change, encode_queue_change
from timemachine.codec import LogEntry

LATEST = stamps.MAX12  # a checkout target past every entry
ZERO12 = stamps.ZERO12
CHUNK = 1_000  # rows read per query while moving
NO_LIMIT = 2**62

SCHEMA = """
create table if not exists denokv_tt_redo (
  versionstamp12 blob primary key, timestamp_ms integer not null, k blob not null,
  v blob, v_encoding integer not null, expiration_ms integer not null, queue blob
) without rowid;
create table if not exists denokv_tt_undo (
  versionstamp12 blob primary key, timestamp_ms integer not null, k blob not null,
  v blob, v_encoding integer not null, expiration_ms integer not null,
  prior_version integer not null, queue blob
) without rowid;
create table if not exists denokv_replica_state (
  k text primary key, v text not null
) without rowid;
create table if not exists denokv_replica_snapshot_ranges (
  object text primary key, pulled integer not null
) without rowid;
"""

INSERT_REDO = (
    "insert or ignore into denokv_tt_redo "
    "(versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms, queue) "
    "values (?, ?, ?, ?, ?, ?, ?)"
)
PUT_REDO = INSERT_REDO.replace("insert or ignore", "insert or replace")
PUT_UNDO = (
    "insert or replace into denokv_tt_undo (versionstamp12, timestamp_ms, k, v, "
    "v_encoding, expiration_ms, prior_version, queue) values (?, ?, ?, ?, ?, ?, ?, ?)"
)
REDO_AFTER = (
    "select versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms, queue "
    "from denokv_tt_redo where versionstamp12 > ? order by versionstamp12 limit ?"
)
UNDO_THROUGH = (
    "select versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms, prior_version, queue "
    "from denokv_tt_undo where versionstamp12 <= ? order by versionstamp12 desc limit ?"
)
DELETE_REDO = "delete from denokv_tt_redo where versionstamp12 = ?"
DELETE_UNDO = "delete from denokv_tt_undo where versionstamp12 = ?"
SELECT_STATE = "select k, v from denokv_replica_state"
UPSERT_STATE = (
    "insert into denokv_replica_state (k, v) values (?, ?) "
    "on conflict(k) do update set v = excluded.v"
)
COUNT_REDO = "select count(*) from denokv_tt_redo"
KNOWN_BETWEEN = (
    "select versionstamp12 from denokv_tt_redo where versionstamp12 > ? and versionstamp12 <= ? "
    "union select versionstamp12 from denokv_tt_undo where versionstamp12 > ? "
    "and versionstamp12 <= ?"
)
NEWEST_OLD_BOUNDARY = (
    "select versionstamp12 from denokv_tt_undo where timestamp_ms < ? "
    "and substr(versionstamp12, 11, 2) = x'ffff' order by versionstamp12 desc limit 1"
)
TRIM_UNDO = "delete from denokv_tt_undo where versionstamp12 <= ?"
RECOVERY_POINTS = (
    "select versionstamp12, timestamp_ms from denokv_tt_redo "
    "where timestamp_ms >= ? and timestamp_ms < ? "
    "union all select versionstamp12, timestamp_ms from denokv_tt_undo "
    "where timestamp_ms >= ? and timestamp_ms < ?"
)


class TimeTravelError(Exception):
    pass


@dataclass(slots=True)
class Moved:
    current12: bytes
    touched: list[bytes] = field(default_factory=list)
    last_commit_ms: int | None = None
    done: bool = True  # False: stopped at a boundary before the target; call again

    @property
    def version(self) -> int:
        return stamps.version_of(self.current12)


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    for table in ("denokv_tt_redo", "denokv_tt_undo"):
        columns = {row[1] for row in conn.execute(f"pragma table_info({table})")}
        if "queue" not in columns:  # a file from before queue changes were followed
            conn.execute(f"alter table {table} add column queue blob")


def get_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute(SELECT_STATE).fetchall())


def set_state(conn: sqlite3.Connection, **values: str) -> None:
    conn.executemany(UPSERT_STATE, list(values.items()))


def current12(conn: sqlite3.Connection) -> bytes:
    value = get_state(conn).get("current_versionstamp12")
    return bytes.fromhex(value) if value else ZERO12


def pending_redo(conn: sqlite3.Connection) -> int:
    return int(conn.execute(COUNT_REDO).fetchone()[0])


def clear_logs(conn: sqlite3.Connection) -> None:
    conn.execute("delete from denokv_tt_redo")
    conn.execute("delete from denokv_tt_undo")


def add_redo(
    conn: sqlite3.Connection, entries: Iterable[tuple[LogEntry, int]], after12: bytes
) -> int:
    """Queue fetched entries (with their commit times); repeats and applied ones are ignored."""
    rows = [
        (
            e.versionstamp12,
            when,
            e.key,
            e.value,
            e.encoding,
            e.expire_at_ms,
            None if e.queue is None else encode_queue_change(e.queue),
        )
        for e, when in entries
        if e.versionstamp12 > after12
    ]
    conn.executemany(INSERT_REDO, rows)
    return len(rows)


def checkout(conn: sqlite3.Connection, target12: bytes, limit: int = NO_LIMIT) -> Moved:
    """Move the state toward the commit boundary nearest `target12` (see module docs)."""
    cur = current12(conn)
    if target12 > cur:
        moved = _redo(conn, cur, target12, limit)
    elif target12 < cur:
        moved = _undo(conn, cur, target12, limit)
    else:
        return Moved(cur)
    if moved.current12 != cur and not stamps.is_boundary(moved.current12):
        raise TimeTravelError("redo/undo log did not end at a snapshot boundary")
    set_state(conn, current_versionstamp12=moved.current12.hex())
    return moved


def _redo(conn: sqlite3.Connection, cur: bytes, target12: bytes, limit: int) -> Moved:
    moved = Moved(cur)
    applied = 0
    while rows := conn.execute(REDO_AFTER, (moved.current12, CHUNK)).fetchall():
        for vs12, ts, k, v, enc, exp, queue in rows:
            _apply_forward(conn, vs12, ts, k, v, enc, exp, queue)
            moved.current12 = vs12
            moved.last_commit_ms = ts
            if queue is None:
                moved.touched.append(k)
            applied += 1
            if stamps.is_boundary(vs12):
                if vs12 >= target12:
                    return moved
                if applied >= limit:
                    moved.done = False
                    return moved
    return moved


def _apply_forward(
    conn: sqlite3.Connection,
    vs12: bytes,
    ts: int,
    k: bytes,
    v: bytes | None,
    enc: int,
    exp: int,
    queue: bytes | None,
) -> None:
    """Apply one redo entry and keep what undoes it."""
    back = _swap(conn, _Change(k, v, enc, exp, stamps.version_of(vs12), queue))
    conn.execute(PUT_UNDO, (vs12, ts, *back))
    conn.execute(DELETE_REDO, (vs12,))


def _undo(conn: sqlite3.Connection, cur: bytes, target12: bytes, limit: int) -> Moved:
    moved = Moved(cur)
    undone = 0
    while rows := conn.execute(UNDO_THROUGH, (cur, CHUNK)).fetchall():
        for vs12, ts, k, v, enc, exp, prior_version, queue in rows:
            if stamps.is_boundary(vs12) and vs12 != cur:
                if vs12 <= target12:
                    moved.current12 = vs12
                    return moved
                if undone >= limit:
                    moved.current12 = vs12
                    moved.done = False
                    return moved
            _apply_backward(conn, vs12, ts, k, v, enc, exp, prior_version, queue)
            if queue is None:
                moved.touched.append(k)
            undone += 1
    # The undo log ran out: we are back at the snapshot the replica started from.
    base = get_state(conn).get("base_versionstamp12")
    moved.current12 = bytes.fromhex(base) if base else ZERO12
    return moved


def _apply_backward(
    conn: sqlite3.Connection,
    vs12: bytes,
    ts: int,
    k: bytes,
    v: bytes | None,
    enc: int,
    exp: int,
    prior_version: int,
    queue: bytes | None,
) -> None:
    """Undo one entry and put it back into the redo log (which keeps no version: the
    versionstamp gives it)."""
    back = _swap(conn, _Change(k, v, enc, exp, prior_version, queue))
    conn.execute(
        PUT_REDO, (vs12, ts, back.k, back.v, back.encoding, back.expiration_ms, back.queue)
    )
    conn.execute(DELETE_UNDO, (vs12,))


class _Change(NamedTuple):
    """One logged change: a key's new state (`v` None deletes it), or a queue change."""

    k: bytes
    v: bytes | None
    encoding: int
    expiration_ms: int
    version: int
    queue: bytes | None


def _swap(conn: sqlite3.Connection, change: _Change) -> _Change:
    """Make `change` and return the change that takes it back: the state it replaced."""
    if change.queue is not None:
        inverse = replay_queue_change(conn, decode_queue_change(change.queue))
        return _Change(b"", None, 0, -1, 0, encode_queue_change(inverse))
    k = change.k
    prior = tables.get_row(conn, k)
    _set(conn, k, change.v, change.encoding, change.expiration_ms, change.version)
    if prior is None:
        return _Change(k, None, 0, -1, 0, None)
    return _Change(k, prior.value, prior.encoding, prior.expire_at_ms, prior.version, None)


def _set(
    conn: sqlite3.Connection, k: bytes, v: bytes | None, enc: int, exp: int, version: int
) -> None:
    if v is None:
        tables.delete(conn, k)
    else:
        tables.put_rows(conn, [tables.KvRow(k, v, enc, version, 0, exp)])


def known_between(conn: sqlite3.Connection, after12: bytes, through12: bytes) -> set[bytes]:
    """Versionstamps of entries fetched in (after12, through12], applied or not."""
    rows = conn.execute(KNOWN_BETWEEN, (after12, through12, after12, through12))
    return {row[0] for row in rows}


def trim_undo(conn: sqlite3.Connection, before_ms: int) -> int:
    """Forget how to go back past the newest commit older than `before_ms`.

    The undo log is cut at a commit boundary, which becomes the new base: a
    checkout back to (or before) it ends there. Returns the entries removed.
    """
    found = conn.execute(NEWEST_OLD_BOUNDARY, (before_ms,)).fetchone()
    if found is None:
        return 0
    removed = conn.execute(TRIM_UNDO, (found[0],)).rowcount
    set_state(conn, base_versionstamp12=found[0].hex())
    return removed


def recovery_points(
    conn: sqlite3.Connection, start_ms: int = 0, end_ms: int | None = None
) -> list[tuple[bytes, int]]:
    """Commit boundaries of the redo and undo logs with their times, newest first."""
    end = end_ms if end_ms is not None else 2**62
    rows = conn.execute(RECOVERY_POINTS, (start_ms, end, start_ms, end)).fetchall()
    points = [(stamps.commit_of(vs12), ts) for vs12, ts in rows if stamps.is_boundary(vs12)]
    return sorted(points, reverse=True)
