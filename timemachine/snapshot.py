"""Taking a consistent snapshot of the database for a new generation.

One read transaction sees the database at versionstamp V; its live keys are
cut into snapshot objects. Redo entries at or before V are covered by the
snapshot; the generation's logs start right after it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from denokv import tables
from denokv.effects import QueueChange, QueueChangeKind, replay_queue_change
from denokv.operations import versionstamp
from timemachine.codec import SnapshotEntry, SnapshotRange, encode_snapshot

CHUNK_ENTRIES = 20_000
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    seq: int
    body: bytes
    entries: int


async def read_snapshot(
    path: str, compression: str, now_ms: int
) -> tuple[bytes, AsyncIterator[SnapshotChunk]]:
    """Open a read transaction; return its versionstamp and the chunks, produced lazily.

    The reading runs on a thread that holds the transaction until the last
    chunk was taken, so the database can keep taking writes meanwhile (WAL).
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[SnapshotChunk | BaseException | None] = asyncio.Queue(maxsize=4)
    started: asyncio.Future[bytes] = loop.create_future()
    stop = threading.Event()

    def produce() -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("begin")
            version = tables.data_version(conn)
            loop.call_soon_threadsafe(started.set_result, versionstamp(version))
            batch: list[SnapshotEntry] = []
            size = 0
            seq = 0
            for row in tables.live_rows(conn, now_ms):
                if stop.is_set():
                    return
                batch.append(
                    SnapshotEntry(
                        row.key, row.value, row.encoding, row.versionstamp, row.expire_at_ms
                    )
                )
                size += len(row.key) + len(row.value) + 19
                if len(batch) >= CHUNK_ENTRIES or size >= CHUNK_BYTES:
                    _hand_over(SnapshotChunk(seq, encode_snapshot(batch, compression), len(batch)))
                    seq += 1
                    batch, size = [], 0
            # The queue's messages ride in the last range (bounded by the queue's size).
            queue = _queue_state(conn)
            _hand_over(SnapshotChunk(seq, encode_snapshot(batch, compression, queue), len(batch)))
            _hand_over(None)
        except BaseException as exc:
            if not started.done():
                loop.call_soon_threadsafe(started.set_exception, exc)
            _hand_over(exc)
        finally:
            if conn.in_transaction:
                conn.execute("rollback")
            conn.close()

    def _hand_over(item: SnapshotChunk | BaseException | None) -> None:
        asyncio.run_coroutine_threadsafe(chunks.put(item), loop).result()

    thread = threading.Thread(target=produce, name="denokv-snapshot", daemon=True)
    thread.start()
    stamp = await started

    async def iterate() -> AsyncIterator[SnapshotChunk]:
        try:
            while True:
                item = await chunks.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # let the producer finish its last hand-over
                if not chunks.empty():
                    chunks.get_nowait()
                await asyncio.sleep(0.01)

    return stamp, iterate()


def _queue_state(conn: sqlite3.Connection) -> list[QueueChange]:
    waiting = [QueueChange(QueueChangeKind.QUEUE_PUT, r) for r in tables.queued_rows(conn)]
    running = [QueueChange(QueueChangeKind.RUNNING_PUT, r) for r in tables.running_rows(conn)]
    return waiting + running


def store_range(conn: sqlite3.Connection, snapshot: SnapshotRange) -> None:
    """Write a snapshot range's keys and queue rows into Deno's tables (replacing any)."""
    tables.put_rows(
        conn,
        (
            tables.KvRow(
                e.key,
                e.value,
                e.encoding,
                int.from_bytes(e.versionstamp[:8], "big"),
                int.from_bytes(e.versionstamp[8:], "big"),
                e.expire_at_ms,
            )
            for e in snapshot.entries
        ),
    )
    for change in snapshot.queue:
        replay_queue_change(conn, change)
