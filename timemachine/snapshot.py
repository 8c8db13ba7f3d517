"""Taking a consistent snapshot of the database for a new generation.

One read transaction sees the database at versionstamp V; its live keys are
cut into snapshot objects. Redo entries at or before V are covered by the
snapshot; the generation's logs start right after it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from denokv import tables
from denokv import versionstamp as stamps
from denokv.effects import QueueChange, QueueChangeKind, replay_queue_change
from timemachine.codec import SnapshotEntry, SnapshotRange, encode_snapshot

CHUNK_ENTRIES = 20_000
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    seq: int
    body: bytes
    entries: int


async def read_snapshot(path: str, compression: str) -> tuple[bytes, int, _Chunks]:
    """Open a read transaction; return its versionstamp, its time and the chunks (lazily).

    The time is read once the transaction sees its state, so a commit dated
    after it is never in the snapshot (a restore to a time picks the generation
    by it). The reading runs on a thread that holds the transaction until the
    last chunk was taken, so the database keeps taking writes meanwhile (WAL).
    Close the iterator (`aclose`) if it is not read to the end.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[SnapshotChunk | BaseException | None] = asyncio.Queue(maxsize=4)
    started: asyncio.Future[tuple[bytes, int]] = loop.create_future()
    stop = threading.Event()

    def produce() -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("begin")
            version = tables.data_version(conn)
            now_ms = time.time_ns() // 1_000_000
            loop.call_soon_threadsafe(started.set_result, (stamps.from_version(version), now_ms))
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
    stamp, taken_ms = await started

    return stamp, taken_ms, _Chunks(chunks, thread, stop)


class _Chunks:
    """The snapshot's chunks as they are produced; `aclose` ends the read transaction.

    A class rather than an async generator: a generator that was never started
    would not run its cleanup on `aclose`, and the producer would hold its
    transaction (and keep the WAL from being checkpointed) for good.
    """

    def __init__(
        self,
        chunks: asyncio.Queue[SnapshotChunk | BaseException | None],
        thread: threading.Thread,
        stop: threading.Event,
    ) -> None:
        self._chunks = chunks
        self._thread = thread
        self._stop = stop
        self._done = False

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> SnapshotChunk:
        if self._done:
            raise StopAsyncIteration
        item = await self._chunks.get()
        if item is None:
            await self.aclose()
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        return item

    async def aclose(self) -> None:
        self._done = True
        self._stop.set()
        while self._thread.is_alive():  # let the producer finish its last hand-over
            if not self._chunks.empty():
                self._chunks.get_nowait()
            await asyncio.sleep(0.01)


def _queue_state(conn: sqlite3.Connection) -> list[QueueChange]:
    waiting = [QueueChange(QueueChangeKind.QUEUE_PUT, r) for r in tables.queued_rows(conn)]
    running = [QueueChange(QueueChangeKind.RUNNING_PUT, r) for r in tables.running_rows(conn)]
    return waiting + running


def kv_rows(snapshot: SnapshotRange) -> Iterator[tables.KvRow]:
    """A snapshot range's keys as rows of `kv`."""
    for e in snapshot.entries:
        version, seq = stamps.version_of(e.versionstamp), stamps.seq_of(e.versionstamp)
        yield tables.KvRow(e.key, e.value, e.encoding, version, seq, e.expire_at_ms)


def store_range(conn: sqlite3.Connection, snapshot: SnapshotRange) -> None:
    """Write a snapshot range's keys and queue rows into Deno's tables (replacing any)."""
    tables.put_rows(conn, kv_rows(snapshot))
    for change in snapshot.queue:
        replay_queue_change(conn, change)
