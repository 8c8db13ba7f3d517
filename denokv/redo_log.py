"""Redo capture: every commit's effects, appended in the commit's own transaction.

Turned on only when a backup is configured. Each commit that changed keys
adds one row per key effect, with the value the key ended up with (a sum is
logged as the value it produced) and a 12-byte versionstamp: the 10-byte
commit versionstamp plus a 2-byte index, the last row of a commit ending in
`ffff` so readers know where a consistent state ends. The engine only
appends; whoever ships the rows (the backup shipper) trims them through
`trim`, on the writer thread. The engine knows nothing of where they go.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from denokv.mutations import Effects
from denokv.operations import versionstamp

BOUNDARY = b"\xff\xff"

SCHEMA = """
create table if not exists denokv_redo_log (
  versionstamp12 blob primary key,
  timestamp_ms integer not null,
  k blob not null,
  v blob,
  v_encoding integer not null,
  expiration_ms integer not null
) without rowid;
create table if not exists denokv_backup_state (
  k text primary key,
  v text not null
) without rowid;
"""

_INSERT = (
    "insert into denokv_redo_log (versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms)"
    " values (?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class RedoEntry:
    versionstamp12: bytes
    timestamp_ms: int
    key: bytes
    value: bytes | None  # None: the key was deleted
    encoding: int
    expire_at_ms: int

    @property
    def is_boundary(self) -> bool:
        return self.versionstamp12.endswith(BOUNDARY)


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def capture(conn: sqlite3.Connection, version: int, effects: Effects) -> None:
    """A commit listener: log the effects of one successful write."""
    changes = effects.changes
    if not changes:
        # Nothing to log, but the version moved: remember it was seen, so the
        # shipper can tell this commit from one made without capture.
        write_state(conn, {"captured_version": str(version)})
        return
    stamp = versionstamp(version)
    now = time.time_ns() // 1_000_000
    last = len(changes) - 1
    conn.executemany(
        _INSERT,
        [
            (stamp + (0xFFFF if i == last else i).to_bytes(2, "big"), now, k, v, enc, exp)
            for i, (k, v, enc, exp) in enumerate(changes)
        ],
    )


def read_after(
    conn: sqlite3.Connection, after12: bytes, limit: int
) -> list[RedoEntry]:
    rows = conn.execute(
        "select versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms "
        "from denokv_redo_log where versionstamp12 > ? order by versionstamp12 limit ?",
        (after12, limit),
    ).fetchall()
    return [RedoEntry(*row) for row in rows]


def backlog(conn: sqlite3.Connection) -> tuple[int, int, int | None]:
    """(entries, approximate bytes, oldest timestamp) still waiting to be shipped."""
    count, size, oldest = conn.execute(
        "select count(*), coalesce(sum(length(k) + coalesce(length(v), 0) + 32), 0), "
        "min(timestamp_ms) from denokv_redo_log"
    ).fetchone()
    return count, size, oldest


def trim(conn: sqlite3.Connection, through12: bytes, state: dict[str, str]) -> None:
    """Drop shipped entries and record the new backup state, in one transaction."""
    conn.execute("begin immediate")
    try:
        conn.execute("delete from denokv_redo_log where versionstamp12 <= ?", (through12,))
        write_state(conn, state)
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise


def read_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("select k, v from denokv_backup_state").fetchall())


def write_state(conn: sqlite3.Connection, state: dict[str, str]) -> None:
    conn.executemany(
        "insert into denokv_backup_state (k, v) values (?, ?) "
        "on conflict(k) do update set v = excluded.v",
        list(state.items()),
    )
