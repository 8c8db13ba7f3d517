"""Redo and undo logs on a replica's file: move the served state to any commit boundary.

Fetched log entries wait in the redo log. Checking out forward applies them in
versionstamp order, writing for each the key's previous state into the undo
log; checking out backward applies undo entries and moves them back to redo.
A checkout always ends on a commit boundary (a versionstamp ending in `ffff`):
forward rounds up to the next boundary, backward down to the previous one.
All functions run inside a transaction the caller owns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from timemachine.codec import LogEntry

BOUNDARY = b"\xff\xff"
LATEST = b"\xff" * 12
ZERO12 = bytes(12)

SCHEMA = """
create table if not exists denokv_tt_redo (
  versionstamp12 blob primary key, timestamp_ms integer not null, k blob not null,
  v blob, v_encoding integer not null, expiration_ms integer not null
) without rowid;
create table if not exists denokv_tt_undo (
  versionstamp12 blob primary key, timestamp_ms integer not null, k blob not null,
  v blob, v_encoding integer not null, expiration_ms integer not null,
  prior_version integer not null
) without rowid;
create table if not exists denokv_replica_state (
  k text primary key, v text not null
) without rowid;
create table if not exists denokv_replica_snapshot_ranges (
  object text primary key, pulled integer not null
) without rowid;
"""


class TimeTravelError(Exception):
    pass


@dataclass(slots=True)
class Moved:
    current12: bytes
    touched: list[bytes] = field(default_factory=list)
    last_commit_ms: int | None = None


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def get_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("select k, v from denokv_replica_state").fetchall())


def set_state(conn: sqlite3.Connection, **values: str) -> None:
    conn.executemany(
        "insert into denokv_replica_state (k, v) values (?, ?) "
        "on conflict(k) do update set v = excluded.v",
        list(values.items()),
    )


def current12(conn: sqlite3.Connection) -> bytes:
    value = get_state(conn).get("current_versionstamp12")
    return bytes.fromhex(value) if value else ZERO12


def add_redo(
    conn: sqlite3.Connection, entries: Iterable[tuple[LogEntry, int]], after12: bytes
) -> int:
    """Queue fetched entries (with their commit times); repeats and applied ones are ignored."""
    rows = [
        (e.versionstamp12, when, e.key, e.value, e.encoding, e.expire_at_ms)
        for e, when in entries
        if e.versionstamp12 > after12
    ]
    conn.executemany(
        "insert or ignore into denokv_tt_redo "
        "(versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms) values (?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)


def checkout(conn: sqlite3.Connection, target12: bytes) -> Moved:
    """Move the state to the commit boundary nearest `target12` (see module docs)."""
    cur = current12(conn)
    if target12 > cur:
        moved = _redo(conn, cur, target12)
    elif target12 < cur:
        moved = _undo(conn, cur, target12)
    else:
        return Moved(cur)
    if moved.current12 != cur and not moved.current12.endswith(BOUNDARY):
        raise TimeTravelError("redo/undo log did not end at a snapshot boundary")
    set_state(conn, current_versionstamp12=moved.current12.hex())
    conn.execute(
        "update data_version set version = ? where k = 0",
        (int.from_bytes(moved.current12[:8], "big"),),
    )
    return moved


def _redo(conn: sqlite3.Connection, cur: bytes, target12: bytes) -> Moved:
    moved = Moved(cur)
    rows = conn.execute(
        "select versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms "
        "from denokv_tt_redo where versionstamp12 > ? order by versionstamp12",
        (cur,),
    ).fetchall()
    for vs12, ts, k, v, enc, exp in rows:
        prior = conn.execute(
            "select v, v_encoding, expiration_ms, version from kv where k = ?", (k,)
        ).fetchone()
        p_v, p_enc, p_exp, p_ver = prior if prior else (None, 0, -1, 0)
        conn.execute(
            "insert or replace into denokv_tt_undo (versionstamp12, timestamp_ms, k, v, "
            "v_encoding, expiration_ms, prior_version) values (?, ?, ?, ?, ?, ?, ?)",
            (vs12, ts, k, p_v, p_enc, p_exp, p_ver),
        )
        _apply(conn, k, v, enc, exp, int.from_bytes(vs12[:8], "big"))
        conn.execute("delete from denokv_tt_redo where versionstamp12 = ?", (vs12,))
        moved.current12 = vs12
        moved.touched.append(k)
        moved.last_commit_ms = ts
        if vs12.endswith(BOUNDARY) and vs12 >= target12:
            break
    return moved


def _undo(conn: sqlite3.Connection, cur: bytes, target12: bytes) -> Moved:
    moved = Moved(cur)
    rows = conn.execute(
        "select versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms, prior_version "
        "from denokv_tt_undo where versionstamp12 <= ? order by versionstamp12 desc",
        (cur,),
    ).fetchall()
    for vs12, ts, k, v, enc, exp, prior_version in rows:
        if vs12.endswith(BOUNDARY) and vs12 <= target12 and vs12 != cur:
            moved.current12 = vs12
            return moved
        now = conn.execute(
            "select v, v_encoding, expiration_ms from kv where k = ?", (k,)
        ).fetchone()
        n_v, n_enc, n_exp = now if now else (None, 0, -1)
        conn.execute(
            "insert or replace into denokv_tt_redo "
            "(versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms) "
            "values (?, ?, ?, ?, ?, ?)",
            (vs12, ts, k, n_v, n_enc, n_exp),
        )
        _apply(conn, k, v, enc, exp, prior_version)
        conn.execute("delete from denokv_tt_undo where versionstamp12 = ?", (vs12,))
        moved.touched.append(k)
    # The undo log ran out: we are back at the snapshot the replica started from.
    base = get_state(conn).get("base_versionstamp12")
    moved.current12 = bytes.fromhex(base) if base else ZERO12
    return moved


def _apply(
    conn: sqlite3.Connection, k: bytes, v: bytes | None, enc: int, exp: int, version: int
) -> None:
    if v is None:
        conn.execute("delete from kv where k = ?", (k,))
    else:
        conn.execute(
            "insert into kv (k, v, v_encoding, version, expiration_ms) values (?, ?, ?, ?, ?) "
            "on conflict(k) do update set v = excluded.v, v_encoding = excluded.v_encoding, "
            "version = excluded.version, expiration_ms = excluded.expiration_ms",
            (k, v, enc, version, exp),
        )


def recovery_points(
    conn: sqlite3.Connection, start_ms: int = 0, end_ms: int | None = None
) -> list[tuple[bytes, int]]:
    """Commit boundaries of the redo and undo logs with their times, newest first."""
    end = end_ms if end_ms is not None else 2**62
    rows = conn.execute(
        "select versionstamp12, timestamp_ms from denokv_tt_redo "
        "where timestamp_ms >= ? and timestamp_ms < ? "
        "union all select versionstamp12, timestamp_ms from denokv_tt_undo "
        "where timestamp_ms >= ? and timestamp_ms < ?",
        (start_ms, end, start_ms, end),
    ).fetchall()
    points = [(vs12[:10], ts) for vs12, ts in rows if vs12.endswith(BOUNDARY)]
    return sorted(points, reverse=True)
