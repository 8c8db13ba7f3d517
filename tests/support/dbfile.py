"""A database file as the tests read it: read-only queries, its rows, its last commit.

The tests look at a server's or a restore's SQLite file from outside, opening it
read-only so that looking changes nothing (and a missing file is an error, not a
new empty database).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

Row = tuple[bytes, bytes, int, int]  # k, v, v_encoding, version


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def kv_rows(db: Path) -> list[Row]:
    """Every row of `kv`, in key order."""
    return query(db, "select k, v, v_encoding, version from kv order by k")


def data_version(db: Path) -> int:
    """The version of the last commit in `db`."""
    return int(query(db, "select version from data_version where k = 0")[0][0])


def point_of(db: Path) -> str:
    """The 20-hex versionstamp of the last commit in `db` (what `pitr` takes and prints)."""
    return f"{data_version(db):016x}0000"


def backlog(db: Path) -> int:
    """Redo log entries not yet shipped."""
    return int(query(db, "select count(*) from denokv_redo_log")[0][0])
