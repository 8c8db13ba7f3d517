"""What a unit of work changed, as the writer hands it on after the change.

Every change to the database (an atomic write, an expiry sweep, a queue step, a
replica applying a segment) is described by one `Effects`: the key changes and
queue changes for redo capture, the keys to wake watchers on, and what the
writer's own bookkeeping needs (the nearest new expiry, messages enqueued).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from enum import IntEnum

from denokv import tables
from denokv.tables import QueueRow


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A key's state after the change: its value, or None when it was deleted."""

    key: bytes
    value: bytes | None
    encoding: int
    expire_at_ms: int


class QueueChangeKind(IntEnum):
    """Field values of the backup format's queue changes (`backup.proto`)."""

    QUEUE_PUT = 1  # a message now waits in `queue`
    QUEUE_DELETE = 2  # it left `queue`
    RUNNING_PUT = 3  # a message is now in flight (`queue_running`)
    RUNNING_DELETE = 4  # it is no longer in flight


@dataclass(frozen=True, slots=True)
class QueueChange:
    kind: QueueChangeKind
    row: QueueRow


@dataclass(slots=True)
class Effects:
    touched: list[bytes] = field(default_factory=list)  # keys as watchers name them
    changes: list[KeyChange] = field(default_factory=list)
    queue_changes: list[QueueChange] = field(default_factory=list)
    earliest_expiry: int | None = None
    enqueued: int = 0

    def set_key(self, key: bytes, value: bytes, encoding: int, expire_at_ms: int) -> None:
        self.changes.append(KeyChange(key, value, encoding, expire_at_ms))
        if expire_at_ms >= 0 and (
            self.earliest_expiry is None or expire_at_ms < self.earliest_expiry
        ):
            self.earliest_expiry = expire_at_ms

    def delete_key(self, key: bytes) -> None:
        self.changes.append(KeyChange(key, None, 0, -1))

    def queue(self, kind: QueueChangeKind, row: QueueRow) -> None:
        self.queue_changes.append(QueueChange(kind, row))
        if kind is QueueChangeKind.QUEUE_PUT:
            self.enqueued += 1

    def extend(self, other: Effects) -> None:
        self.touched += other.touched
        self.changes += other.changes
        self.queue_changes += other.queue_changes
        self.enqueued += other.enqueued
        if other.earliest_expiry is not None and (
            self.earliest_expiry is None or other.earliest_expiry < self.earliest_expiry
        ):
            self.earliest_expiry = other.earliest_expiry

    @property
    def empty(self) -> bool:
        return not (self.changes or self.queue_changes)


def replay_queue_change(conn: sqlite3.Connection, change: QueueChange) -> QueueChange:
    """Apply a logged queue change to the tables; return the change that undoes it.

    A change names its row by the table's whole primary key (time and id), so
    replaying it is exact and its inverse is the opposite change of the same row.
    """
    row = change.row
    kind = change.kind
    if kind in (QueueChangeKind.QUEUE_PUT, QueueChangeKind.QUEUE_DELETE):
        prior = tables.queued(conn, row.ts, row.id)
        tables.delete_queued(conn, row)
        if kind is QueueChangeKind.QUEUE_PUT:
            tables.put_queued(conn, [row])
        put, delete = QueueChangeKind.QUEUE_PUT, QueueChangeKind.QUEUE_DELETE
    else:
        prior = tables.running_row(conn, row.ts, row.id)
        tables.delete_running(conn, row)
        if kind is QueueChangeKind.RUNNING_PUT:
            tables.put_running(conn, row)
        put, delete = QueueChangeKind.RUNNING_PUT, QueueChangeKind.RUNNING_DELETE
    return QueueChange(put, prior) if prior is not None else QueueChange(delete, row)
