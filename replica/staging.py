"""A new snapshot, staged beside the data a replica serves, then swapped in at once.

When the primary starts a generation the replica cannot step into, the new
snapshot is written into staging tables one range per commit (bounded memory,
and readers keep seeing the old state), and a single transaction replaces the
served data with it.
"""

from __future__ import annotations

import sqlite3

from denokv import tables
from denokv.effects import replay_queue_change
from denokv.redo_log import decode_queue_change, encode_queue_change
from timemachine.codec import SnapshotRange
from timemachine.snapshot import kv_rows

STAGED_KV = "denokv_replica_staging_kv"
SCHEMA = f"""
create table if not exists {STAGED_KV} (
  k blob primary key, v blob not null, v_encoding integer not null,
  version integer not null, seq integer not null, expiration_ms integer not null
) without rowid;
create table if not exists denokv_replica_staging_queue (
  n integer primary key, change blob not null
)
"""
PUT_STAGED_QUEUE = "insert into denokv_replica_staging_queue (change) values (?)"
STAGED_QUEUE = "select change from denokv_replica_staging_queue order by n"


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def clear(conn: sqlite3.Connection) -> None:
    create_tables(conn)
    conn.execute(f"delete from {STAGED_KV}")
    conn.execute("delete from denokv_replica_staging_queue")


def add(conn: sqlite3.Connection, snapshot: SnapshotRange) -> None:
    tables.put_rows(conn, kv_rows(snapshot), table=STAGED_KV)
    conn.executemany(PUT_STAGED_QUEUE, [(encode_queue_change(c),) for c in snapshot.queue])


def swap_in(conn: sqlite3.Connection) -> None:
    """Replace the served keys and queue with the staged ones (inside the caller's commit)."""
    tables.replace_kv_with(conn, STAGED_KV)
    tables.clear_queues(conn)
    for (change,) in conn.execute(STAGED_QUEUE).fetchall():
        replay_queue_change(conn, decode_queue_change(change))
    clear(conn)
