"""Deno's tables: their layout, their migrations, and every statement run on them.

`kv`, `data_version`, `queue` and `queue_running` are Deno's own file format
(KV_FACTS §11.1): a file written by `deno` opens here and the other way round.
This module is the only place that names them. Everyone else (the writer, the
queue, restore, snapshots, the follower, time travel) calls the functions below
with a connection, inside a transaction they were handed; on a live database
that transaction is always the writer's (`denokv.writer`), so the version
counter, redo capture and watchers cannot be skipped. Files that no server has
open (a restore being built) use `transaction` directly.

Tables of our own carry a `denokv_` prefix, which Deno ignores.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from denokv import versionstamp as stamps

# -- layout -----------------------------------------------------------------------

MIGRATIONS: tuple[str, ...] = (
    """
    create table data_version (
      k integer primary key,
      version integer not null
    );
    insert into data_version (k, version) values (0, 0);
    create table kv (
      k blob primary key,
      v blob not null,
      v_encoding integer not null,
      version integer not null
    ) without rowid;
    """,
    """
    create table queue (
      ts integer not null,
      id text not null,
      data blob not null,
      backoff_schedule text not null,
      keys_if_undelivered blob not null,
      primary key (ts, id)
    );
    create table queue_running(
      deadline integer not null,
      id text not null,
      data blob not null,
      backoff_schedule text not null,
      keys_if_undelivered blob not null,
      primary key (deadline, id)
    );
    """,
    """
    alter table kv add column seq integer not null default 0;
    alter table data_version add column seq integer not null default 0;
    alter table kv add column expiration_ms integer not null default -1;
    create index kv_expiration_ms_idx on kv (expiration_ms);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

CREATE_MIGRATION_STATE = (
    "create table if not exists migration_state("
    "k integer not null primary key, version integer not null)"
)
SELECT_MIGRATION_STATE = "select version from migration_state where k = 0"
UPSERT_MIGRATION_STATE = (
    "insert into migration_state (k, version) values (0, ?) "
    "on conflict(k) do update set version = excluded.version"
)

# -- statements -------------------------------------------------------------------

SELECT_DATA_VERSION = "select version from data_version where k = 0"
UPDATE_DATA_VERSION = "update data_version set version = ? where k = 0"

_LIVE = "(expiration_ms < 0 or expiration_ms > ?)"
SCAN_FORWARD = (
    "select k, v, v_encoding, version, seq from kv "
    f"where k >= ? and k < ? and {_LIVE} order by k asc limit ?"
)
SCAN_REVERSE = (
    "select k, v, v_encoding, version, seq from kv "
    f"where k >= ? and k < ? and {_LIVE} order by k desc limit ?"
)
SELECT_LIVE_ROWS = (
    f"select k, v, v_encoding, version, seq, expiration_ms from kv where {_LIVE} order by k"
)
SELECT_CHECK = "select version, seq, expiration_ms from kv where k = ?"
SELECT_VALUE = "select v, v_encoding, expiration_ms from kv where k = ?"
SELECT_ROW = "select v, v_encoding, version, seq, expiration_ms from kv where k = ?"
SELECT_POINT = "select k, v, v_encoding, version, seq, expiration_ms from kv where k = ?"
UPSERT_KV = (
    "insert into kv (k, v, v_encoding, version, seq, expiration_ms) values (?, ?, ?, ?, 0, ?) "
    "on conflict(k) do update set v = excluded.v, v_encoding = excluded.v_encoding, "
    "version = excluded.version, seq = 0, expiration_ms = excluded.expiration_ms"
)
# `kv`, or a table with its columns (a replica stages a new snapshot in one).
PUT_ROW = (
    "insert or replace into {table} (k, v, v_encoding, version, seq, expiration_ms) "
    "values (?, ?, ?, ?, ?, ?)"
)
DELETE_KV = "delete from kv where k = ?"
CLEAR_KV = "delete from kv"
COPY_KV_FROM = (
    "insert into kv (k, v, v_encoding, version, seq, expiration_ms) "
    "select k, v, v_encoding, version, seq, expiration_ms from {table}"
)
COUNT_KV = "select count(*) from kv"
SELECT_EXPIRED = (
    "select k from kv where expiration_ms >= 0 and expiration_ms <= ? "
    "order by expiration_ms limit ?"
)
SELECT_EXPIRY = "select k, expiration_ms from kv where k in ({marks}) and expiration_ms >= 0"
SELECT_EARLIEST_EXPIRY = "select min(expiration_ms) from kv where expiration_ms >= 0"

_QUEUE_COLUMNS = "ts, id, data, backoff_schedule, keys_if_undelivered"
_RUNNING_COLUMNS = "deadline, id, data, backoff_schedule, keys_if_undelivered"
INSERT_QUEUE = f"insert into queue ({_QUEUE_COLUMNS}) values (?, ?, ?, ?, ?)"
PUT_QUEUE = f"insert or replace into queue ({_QUEUE_COLUMNS}) values (?, ?, ?, ?, ?)"
SELECT_DUE = f"select {_QUEUE_COLUMNS} from queue where ts <= ? order by ts limit 1"
SELECT_QUEUED = f"select {_QUEUE_COLUMNS} from queue where ts = ? and id = ?"
SELECT_QUEUE_ROWS = f"select {_QUEUE_COLUMNS} from queue order by ts, id"
DELETE_QUEUE = "delete from queue where ts = ? and id = ?"
SELECT_NEXT_DUE = "select min(ts) from queue"
COUNT_QUEUE = "select count(*) from queue"
CLEAR_QUEUE = "delete from queue"
INSERT_RUNNING = f"insert or replace into queue_running ({_RUNNING_COLUMNS}) values (?, ?, ?, ?, ?)"
SELECT_RUNNING = f"select {_RUNNING_COLUMNS} from queue_running where id = ?"
SELECT_RUNNING_ROW = f"select {_RUNNING_COLUMNS} from queue_running where deadline = ? and id = ?"
SELECT_RUNNING_ROWS = f"select {_RUNNING_COLUMNS} from queue_running order by deadline, id"
SELECT_LOST = f"select {_RUNNING_COLUMNS} from queue_running where deadline <= ? limit ?"
DELETE_RUNNING = "delete from queue_running where deadline = ? and id = ?"
COUNT_RUNNING = "select count(*) from queue_running"
CLEAR_RUNNING = "delete from queue_running"


class SchemaError(RuntimeError):
    """The file is not a Deno KV database this version understands."""


# A live row as a read returns it: (key, value, encoding, version, seq). A plain
# tuple: this is the hot path of every read.
LiveRow = tuple[bytes, bytes, int, int, int]


@dataclass(frozen=True, slots=True)
class KvRow:
    """One row of `kv`: a key's value, its versionstamp's parts and its expiry."""

    key: bytes
    value: bytes
    encoding: int
    version: int
    seq: int = 0
    expire_at_ms: int = -1

    @property
    def versionstamp(self) -> bytes:
        return stamps.from_version(self.version, self.seq)


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One row of `queue` (`ts` = delivery time) or `queue_running` (`ts` = lease deadline).

    The schedule and the dead-letter keys are kept as the JSON text Deno stores.
    """

    ts: int
    id: str
    data: bytes
    backoff_schedule: str
    keys_if_undelivered: bytes | str


NOTED_KEYS = 4096  # a bigger change of kv is told to the read caches as "every key"


class TrackedConnection(sqlite3.Connection):
    """The writer's connection. The functions below that change `kv` note on it which
    keys its open transaction changed (or that it changed them all), so the writer can
    tell the read caches before it commits (`denokv.read_cache`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changed_keys: list[bytes] = []
        self.changed_all = False


def _changed(conn: sqlite3.Connection, key: bytes) -> None:
    if type(conn) is TrackedConnection:
        conn.changed_keys.append(key)


def _noted(conn: TrackedConnection, rows: Iterable[KvRow]) -> Iterator[KvRow]:
    """`rows`, each key noted as it passes; past NOTED_KEYS, the change counts as total."""
    for row in rows:
        if not conn.changed_all:
            conn.changed_keys.append(row.key)
            if len(conn.changed_keys) > NOTED_KEYS:
                conn.changed_all = True
        yield row


def _changed_all(conn: sqlite3.Connection) -> None:
    if type(conn) is TrackedConnection:
        conn.changed_all = True


# -- transactions -----------------------------------------------------------------


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`begin immediate` … `commit`, rolled back on any exception."""
    conn.execute("begin immediate")
    try:
        yield conn
    except BaseException:
        rollback(conn)
        raise
    conn.execute("commit")


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back whatever is open; SQLite may already have done it after an I/O error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("rollback")


@contextlib.contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: every statement inside sees the same state of the file."""
    conn.execute("begin")
    try:
        yield conn
    finally:
        rollback(conn)


# -- schema -----------------------------------------------------------------------


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a writable connection's schema up to date in one transaction."""
    with transaction(conn):
        conn.execute(CREATE_MIGRATION_STATE)
        row = conn.execute(SELECT_MIGRATION_STATE).fetchone()
        current = row[0] if row else 0
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema version {current} is newer than this server "
                f"supports ({SCHEMA_VERSION})"
            )
        for step in range(current, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[step]):
                conn.execute(statement)
        if current != SCHEMA_VERSION:
            conn.execute(UPSERT_MIGRATION_STATE, (SCHEMA_VERSION,))


def check_readable(conn: sqlite3.Connection) -> None:
    """A read-only open cannot migrate: insist the schema is already current."""
    try:
        row = conn.execute(SELECT_MIGRATION_STATE).fetchone()
    except sqlite3.OperationalError as exc:
        raise SchemaError(f"not a Deno KV database: {exc}") from exc
    if row is None or row[0] != SCHEMA_VERSION:
        found = row[0] if row else "none"
        raise SchemaError(
            f"database schema version is {found}, expected {SCHEMA_VERSION}; "
            "open it once without --read-only to migrate"
        )


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# -- the version counter ----------------------------------------------------------


def data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute(SELECT_DATA_VERSION).fetchone()[0])


def set_data_version(conn: sqlite3.Connection, version: int) -> None:
    conn.execute(UPDATE_DATA_VERSION, (version,))


# -- kv ---------------------------------------------------------------------------
#
# The statements of a read and of a write bind their keys and values as
# `bytearray`. Python 3.11's sqlite3 binds an int, float, str or bytearray as it
# is, but sends `bytes` through its adaptation protocol first, which looks up two
# attributes that do not exist and formats an AttributeError for each: about
# 1.9k instructions per parameter, against a copy of a short buffer. SQLite
# stores and compares both as the same blob.


def scan(
    conn: sqlite3.Connection, start: bytes, end: bytes, limit: int, reverse: bool, now_ms: int
) -> list[LiveRow]:
    """Live rows with start <= key < end, in key order (or reverse), at most `limit`."""
    if start >= end:
        return []
    statement = SCAN_REVERSE if reverse else SCAN_FORWARD
    return conn.execute(statement, (bytearray(start), bytearray(end), now_ms, limit)).fetchall()


def expiry_times(conn: sqlite3.Connection, keys: Sequence[bytes]) -> dict[bytes, int]:
    """The expiry (ms since the epoch) of each of these keys that has one (the console's rows)."""
    found: dict[bytes, int] = {}
    for i in range(0, len(keys), 500):
        chunk = list(keys[i : i + 500])
        marks = ",".join("?" * len(chunk))
        found.update(conn.execute(SELECT_EXPIRY.format(marks=marks), chunk).fetchall())
    return found


def live_rows(conn: sqlite3.Connection, now_ms: int) -> Iterator[KvRow]:
    """Every live row in key order (a snapshot's contents), read lazily."""
    for k, v, enc, ver, seq, exp in conn.execute(SELECT_LIVE_ROWS, (now_ms,)):
        yield KvRow(k, v, enc, ver, seq, exp)


def get_row(conn: sqlite3.Connection, key: bytes) -> KvRow | None:
    """The stored row of a key, expired or not."""
    row = conn.execute(SELECT_ROW, (key,)).fetchone()
    if row is None:
        return None
    v, enc, ver, seq, exp = row
    return KvRow(key, v, enc, ver, seq, exp)


def point_row(conn: sqlite3.Connection, key: bytes) -> tuple[LiveRow | None, int]:
    """A key's row, expired or not, and its expiry (< 0: none): what the read cache keeps."""
    row = conn.execute(SELECT_POINT, (bytearray(key),)).fetchone()
    if row is None:
        return None, -1
    k, v, encoding, version, seq, expiry = row
    return (k, v, encoding, version, seq), expiry


def live_versionstamp(conn: sqlite3.Connection, key: bytes, now_ms: int) -> bytes | None:
    """The versionstamp of a key that exists and has not expired; None otherwise."""
    row = conn.execute(SELECT_CHECK, (bytearray(key),)).fetchone()
    if row is None or not is_live(row[2], now_ms):
        return None
    return stamps.from_version(row[0], row[1])


def live_value(conn: sqlite3.Connection, key: bytes, now_ms: int) -> tuple[bytes, int] | None:
    """(value, encoding) of a key that exists and has not expired."""
    row = conn.execute(SELECT_VALUE, (bytearray(key),)).fetchone()
    if row is None or not is_live(row[2], now_ms):
        return None
    return row[0], row[1]


def upsert(
    conn: sqlite3.Connection,
    key: bytes,
    value: bytes,
    encoding: int,
    version: int,
    expire_at_ms: int,
) -> None:
    conn.execute(UPSERT_KV, (bytearray(key), bytearray(value), encoding, version, expire_at_ms))
    _changed(conn, key)


def delete(conn: sqlite3.Connection, key: bytes) -> None:
    conn.execute(DELETE_KV, (bytearray(key),))
    _changed(conn, key)


def delete_many(conn: sqlite3.Connection, keys: Sequence[bytes]) -> None:
    conn.executemany(DELETE_KV, [(k,) for k in keys])
    if type(conn) is TrackedConnection:
        conn.changed_keys += keys


def put_rows(conn: sqlite3.Connection, rows: Iterable[KvRow], table: str = "kv") -> None:
    """Write whole rows as they are (snapshots, restores, time travel), replacing any, into
    `kv` or another table with its columns."""
    if table == "kv" and type(conn) is TrackedConnection:
        rows = _noted(conn, rows)
    conn.executemany(
        PUT_ROW.format(table=table),
        ((r.key, r.value, r.encoding, r.version, r.seq, r.expire_at_ms) for r in rows),
    )


def clear_kv(conn: sqlite3.Connection) -> None:
    conn.execute(CLEAR_KV)
    _changed_all(conn)


def replace_kv_with(conn: sqlite3.Connection, source_table: str) -> None:
    """Make `kv` hold exactly the rows of `source_table` (a staging table of kv's columns)."""
    conn.execute(CLEAR_KV)
    conn.execute(COPY_KV_FROM.format(table=source_table))
    _changed_all(conn)


def count_kv(conn: sqlite3.Connection) -> int:
    return int(conn.execute(COUNT_KV).fetchone()[0])


def expired_keys(conn: sqlite3.Connection, now_ms: int, limit: int) -> list[bytes]:
    """Up to `limit` keys whose expiry has passed, soonest first (the index's order)."""
    return [row[0] for row in conn.execute(SELECT_EXPIRED, (now_ms, limit))]


def earliest_expiry(conn: sqlite3.Connection) -> int | None:
    row = conn.execute(SELECT_EARLIEST_EXPIRY).fetchone()
    return None if row[0] is None else int(row[0])


def is_live(expiration_ms: int, now_ms: int) -> bool:
    return expiration_ms < 0 or expiration_ms > now_ms


# -- queue ------------------------------------------------------------------------


def _queue_row(row: tuple[int, str, bytes, str, bytes | str]) -> QueueRow:
    return QueueRow(*row)


def _params(row: QueueRow) -> tuple[int, str, bytes, str, bytes | str]:
    return (row.ts, row.id, row.data, row.backoff_schedule, row.keys_if_undelivered)


def insert_queued(conn: sqlite3.Connection, row: QueueRow) -> None:
    conn.execute(INSERT_QUEUE, _params(row))


def put_queued(conn: sqlite3.Connection, rows: Iterable[QueueRow]) -> None:
    """Write `queue` rows as they are (restores, replicas), replacing any with the same key."""
    conn.executemany(PUT_QUEUE, (_params(r) for r in rows))


def first_due(conn: sqlite3.Connection, now_ms: int) -> QueueRow | None:
    row = conn.execute(SELECT_DUE, (now_ms,)).fetchone()
    return None if row is None else _queue_row(row)


def next_due(conn: sqlite3.Connection) -> int | None:
    row = conn.execute(SELECT_NEXT_DUE).fetchone()
    return None if row[0] is None else int(row[0])


def queued(conn: sqlite3.Connection, ts: int, msg_id: str) -> QueueRow | None:
    """The `queue` row with this primary key, if there is one."""
    row = conn.execute(SELECT_QUEUED, (ts, msg_id)).fetchone()
    return None if row is None else _queue_row(row)


def delete_queued(conn: sqlite3.Connection, row: QueueRow) -> None:
    conn.execute(DELETE_QUEUE, (row.ts, row.id))


def queued_rows(conn: sqlite3.Connection) -> Iterator[QueueRow]:
    for row in conn.execute(SELECT_QUEUE_ROWS):
        yield _queue_row(row)


def put_running(conn: sqlite3.Connection, row: QueueRow) -> None:
    conn.execute(INSERT_RUNNING, _params(row))


def put_running_rows(conn: sqlite3.Connection, rows: Iterable[QueueRow]) -> None:
    conn.executemany(INSERT_RUNNING, (_params(r) for r in rows))


def running(conn: sqlite3.Connection, msg_id: str) -> QueueRow | None:
    """The in-flight row of a message (the table is small: only deliveries under way)."""
    row = conn.execute(SELECT_RUNNING, (msg_id,)).fetchone()
    return None if row is None else _queue_row(row)


def running_row(conn: sqlite3.Connection, deadline: int, msg_id: str) -> QueueRow | None:
    row = conn.execute(SELECT_RUNNING_ROW, (deadline, msg_id)).fetchone()
    return None if row is None else _queue_row(row)


def running_rows(conn: sqlite3.Connection) -> Iterator[QueueRow]:
    for row in conn.execute(SELECT_RUNNING_ROWS):
        yield _queue_row(row)


def lost_running(conn: sqlite3.Connection, now_ms: int, limit: int) -> list[QueueRow]:
    return [_queue_row(row) for row in conn.execute(SELECT_LOST, (now_ms, limit))]


def delete_running(conn: sqlite3.Connection, row: QueueRow) -> None:
    conn.execute(DELETE_RUNNING, (row.ts, row.id))


def queue_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(messages waiting, messages in flight)."""
    waiting = conn.execute(COUNT_QUEUE).fetchone()[0]
    in_flight = conn.execute(COUNT_RUNNING).fetchone()[0]
    return int(waiting), int(in_flight)


def clear_queues(conn: sqlite3.Connection) -> None:
    conn.execute(CLEAR_QUEUE)
    conn.execute(CLEAR_RUNNING)
