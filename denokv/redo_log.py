"""Redo capture: every commit's effects, appended in the commit's own transaction.

Turned on only when a backup is configured. Each commit adds one row per
effect: first its queue changes, then its key changes (with the value the key
ended up with: a sum is logged as the value it produced). Rows carry a 12-byte
versionstamp, the commit's 10 bytes plus a 2-byte index; the last row of a
commit ends in `ffff`, so readers know where a consistent state ends. Because
key changes come last, a commit that changed keys always ends on a key change,
and a reader that only knows key changes (upstream's replica) still sees every
boundary it needs.

The engine only appends; whoever ships the rows (the backup shipper) trims them
through a writer job (`RedoLog.trim`). The counters kept here (backlog size and
age) are what `/metrics` and `/readyz` report: they never scan the table.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from denokv import versionstamp as stamps
from denokv.effects import Effects, QueueChange, QueueChangeKind
from denokv.health import gauges
from denokv.proto import backup_pb2 as pb
from denokv.tables import QueueRow

MAX_ROWS_PER_COMMIT = 0xFFFF  # indexes 0..fffe, and ffff for the last row
KEY_CHANGE = 0
ROW_OVERHEAD = 32  # approximate bytes per row beside key and value, for the backlog gauge
# Keys of `denokv_backup_state` this module keeps.
CAPTURED_VERSION = "captured_version"  # the version of the newest captured commit
PRIMARY_ID = "primary_id"  # names this database file in the backups it writes
UNCAPTURED_AT = "uncaptured_at"  # set when commits were found that were not captured

SCHEMA = """
create table if not exists denokv_redo_log (
  versionstamp12 blob primary key,
  timestamp_ms integer not null,
  k blob not null,
  v blob,
  v_encoding integer not null,
  expiration_ms integer not null,
  kind integer not null default 0
) without rowid;
create table if not exists denokv_backup_state (
  k text primary key,
  v text not null
) without rowid;
"""

INSERT_ROW = (
    "insert into denokv_redo_log "
    "(versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms, kind) "
    "values (?, ?, ?, ?, ?, ?, ?)"
)
SELECT_AFTER = (
    "select versionstamp12, timestamp_ms, k, v, v_encoding, expiration_ms, kind "
    "from denokv_redo_log where versionstamp12 > ? order by versionstamp12 limit ?"
)
SELECT_NEWEST = "select max(versionstamp12) from denokv_redo_log"
SELECT_OLDEST_TIME = "select timestamp_ms from denokv_redo_log order by versionstamp12 limit 1"
SELECT_BACKLOG = (
    "select count(*), coalesce(sum(length(k) + coalesce(length(v), 0)), 0) from denokv_redo_log"
)
TRIM = (
    "delete from denokv_redo_log where versionstamp12 in ("
    "select versionstamp12 from denokv_redo_log where versionstamp12 <= ? "
    "order by versionstamp12 limit ?) "
    "returning length(k) + coalesce(length(v), 0)"
)
TRIM_BATCH = 5_000  # shipped rows deleted per commit: a trim never holds up the writer long
SELECT_STATE = "select k, v from denokv_backup_state"
UPSERT_STATE = (
    "insert into denokv_backup_state (k, v) values (?, ?) "
    "on conflict(k) do update set v = excluded.v"
)


class CaptureError(Exception):
    """A commit has more effects than a 12-byte versionstamp can number."""


@dataclass(frozen=True, slots=True)
class RedoEntry:
    versionstamp12: bytes
    timestamp_ms: int
    key: bytes  # for a queue change: the message id
    value: bytes | None  # None: the key was deleted; for a queue change: the encoded change
    encoding: int
    expire_at_ms: int
    kind: int = KEY_CHANGE  # or a QueueChangeKind

    @property
    def is_boundary(self) -> bool:
        return stamps.is_boundary(self.versionstamp12)

    @property
    def is_queue_change(self) -> bool:
        return self.kind != KEY_CHANGE


@dataclass(frozen=True, slots=True)
class Backlog:
    entries: int
    bytes: int
    oldest_ms: int | None  # when the oldest unshipped row was captured


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    columns = {row[1] for row in conn.execute("pragma table_info(denokv_redo_log)")}
    if "kind" not in columns:  # a redo log written before queue changes were captured
        conn.execute("alter table denokv_redo_log add column kind integer not null default 0")


def fill_queue_change(out: pb.BackupQueueChange, change: QueueChange) -> pb.BackupQueueChange:
    """Write a queue change into its backup message (the redo log and segments share it)."""
    row = change.row
    keys = row.keys_if_undelivered
    out.kind = cast("pb.BackupQueueChangeKind", int(change.kind))
    out.ts = row.ts
    out.id = row.id
    out.data = row.data
    out.backoff_schedule = row.backoff_schedule
    out.keys_if_undelivered = keys.encode() if isinstance(keys, str) else bytes(keys)
    return out


def read_queue_change(msg: pb.BackupQueueChange) -> QueueChange:
    """The change a backup message holds; ValueError for a kind this version does not know."""
    row = QueueRow(msg.ts, msg.id, msg.data, msg.backoff_schedule, msg.keys_if_undelivered.decode())
    return QueueChange(QueueChangeKind(msg.kind), row)


def encode_queue_change(change: QueueChange) -> bytes:
    return fill_queue_change(pb.BackupQueueChange(), change).SerializeToString()


def decode_queue_change(body: bytes) -> QueueChange:
    msg = pb.BackupQueueChange()
    msg.ParseFromString(body)
    return read_queue_change(msg)


class RedoLog:
    """The redo log of one database file: the commit listener and its backlog counters.

    `capture` runs on the writer thread inside each commit and `trim` inside a
    writer job; `begin` is called by the writer at the start of every unit with
    the version it found, which is how commits made past the capture (Deno or a
    run without backup writing the same file) are noticed. The counters are
    plain attributes, read by any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries = 0
        self.bytes = 0
        self.oldest_ms: int | None = None
        self.captured_version = 0  # the newest version this log has seen commit
        self.primary_id = ""

    def open(self, conn: sqlite3.Connection, data_version: int) -> None:
        """Create the tables and count what is waiting (once, at start-up)."""
        create_tables(conn)
        count, size = conn.execute(SELECT_BACKLOG).fetchone()
        oldest = conn.execute(SELECT_OLDEST_TIME).fetchone()
        state = read_state(conn)
        if not state.get(PRIMARY_ID):
            state[PRIMARY_ID] = str(uuid.uuid4())
            write_state(conn, {PRIMARY_ID: state[PRIMARY_ID]})
        self.primary_id = state[PRIMARY_ID]
        with self._lock:
            self.entries = count
            self.bytes = size + ROW_OVERHEAD * count
            self.oldest_ms = oldest[0] if oldest else None
            self.captured_version = int(state.get(CAPTURED_VERSION, "0"))
        self.begin(conn, data_version)

    def begin(self, conn: sqlite3.Connection, data_version: int) -> None:
        """A unit of work starts at `data_version`: was anything committed uncaptured?"""
        if data_version == self.captured_version:
            return
        # Sticky until a new backup generation's snapshot covers it (the shipper clears it).
        state = read_state(conn)
        if not state.get(UNCAPTURED_AT):
            write_state(conn, {UNCAPTURED_AT: str(data_version)})
        write_state(conn, {CAPTURED_VERSION: str(data_version)})
        self.captured_version = data_version

    def clear_uncaptured(self, conn: sqlite3.Connection, through_version: int) -> None:
        """Forget uncaptured commits at or before `through_version` (a snapshot holds them)."""
        marker = read_state(conn).get(UNCAPTURED_AT)
        if marker and int(marker) <= through_version:
            write_state(conn, {UNCAPTURED_AT: ""})

    def backlog(self) -> Backlog:
        with self._lock:
            return Backlog(self.entries, self.bytes, self.oldest_ms)

    # -- health (a `denokv.health.Component`) --------------------------------------

    name = "redo_log"

    def metrics(self) -> Iterator[Any]:
        backlog = self.backlog()
        yield from gauges(
            ("denokv_redo_backlog_entries", "Redo entries not yet shipped", backlog.entries),
            (
                "denokv_redo_backlog_bytes",
                "Approximate size of the unshipped redo log",
                backlog.bytes,
            ),
            (
                "denokv_redo_backlog_oldest_seconds",
                "Age of the oldest unshipped redo entry",
                backlog_age_s(backlog),
            ),
        )

    def problems(self) -> list[str]:
        return []  # how much backlog is too much is the shipper's call

    def status(self) -> dict[str, Any]:
        backlog = self.backlog()
        return {
            "backlog_entries": backlog.entries,
            "backlog_bytes": backlog.bytes,
            "backlog_oldest_ms": backlog.oldest_ms,
            "captured_version": self.captured_version,
        }

    def capture(self, conn: sqlite3.Connection, version: int, effects: Effects) -> None:
        """The commit listener: log the effects of one successful commit."""
        rows = _rows(version, effects)
        if rows:
            conn.executemany(INSERT_ROW, rows)
        write_state(conn, {CAPTURED_VERSION: str(version)})
        size = sum(len(r[2]) + len(r[3] or b"") + ROW_OVERHEAD for r in rows)
        with self._lock:
            self.entries += len(rows)
            self.bytes += size
            if rows and self.oldest_ms is None:
                self.oldest_ms = rows[0][1]
            self.captured_version = version

    def trim(self, conn: sqlite3.Connection, through12: bytes, limit: int = TRIM_BATCH) -> bool:
        """Drop up to `limit` shipped rows (inside a writer job); True while more remain.

        Record the new backup state first, in a job of its own: rows a crash
        leaves behind are at or before what the state says was shipped, and the
        next trim takes them.
        """
        removed = [row[0] for row in conn.execute(TRIM, (through12, limit))]
        oldest = conn.execute(SELECT_OLDEST_TIME).fetchone()
        with self._lock:
            self.entries = max(0, self.entries - len(removed))
            self.bytes = max(0, self.bytes - sum(removed) - ROW_OVERHEAD * len(removed))
            self.oldest_ms = oldest[0] if oldest else None
        return len(removed) == limit


def _rows(
    version: int, effects: Effects
) -> list[tuple[bytes, int, bytes, bytes | None, int, int, int]]:
    stamp = stamps.from_version(version)
    now = time.time_ns() // 1_000_000
    rows: list[tuple[bytes, int, bytes, bytes | None, int, int, int]] = [
        (b"", now, c.row.id.encode(), encode_queue_change(c), 0, c.row.ts, int(c.kind))
        for c in effects.queue_changes
    ]
    rows += [
        (b"", now, c.key, c.value, c.encoding, c.expire_at_ms, KEY_CHANGE) for c in effects.changes
    ]
    if len(rows) > MAX_ROWS_PER_COMMIT:
        raise CaptureError(
            f"a commit of {len(rows)} changes cannot be captured (at most {MAX_ROWS_PER_COMMIT})"
        )
    last = len(rows) - 1
    return [(stamps.change(stamp, i, i == last), *row[1:]) for i, row in enumerate(rows)]


def backlog_age_s(backlog: Backlog) -> float:
    if backlog.oldest_ms is None:
        return 0.0
    return max(0.0, time.time() - backlog.oldest_ms / 1000)


def read_after(conn: sqlite3.Connection, after12: bytes, limit: int) -> list[RedoEntry]:
    return [RedoEntry(*row) for row in conn.execute(SELECT_AFTER, (after12, limit))]


def newest(conn: sqlite3.Connection) -> bytes | None:
    stamp: bytes | None = conn.execute(SELECT_NEWEST).fetchone()[0]
    return stamp


def read_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute(SELECT_STATE).fetchall())


def write_state(conn: sqlite3.Connection, state: dict[str, str]) -> None:
    conn.executemany(UPSERT_STATE, list(state.items()))
