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

from denokv.operations import versionstamp
from timemachine.codec import SnapshotEntry, encode_snapshot

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
            version = conn.execute("select version from data_version where k = 0").fetchone()[0]
            loop.call_soon_threadsafe(started.set_result, versionstamp(version))
            rows = conn.execute(
                "select k, v, v_encoding, version, expiration_ms from kv "
                "where expiration_ms < 0 or expiration_ms > ? order by k",
                (now_ms,),
            )
            batch: list[SnapshotEntry] = []
            size = 0
            seq = 0
            for k, v, enc, ver, exp in rows:
                if stop.is_set():
                    return
                batch.append(SnapshotEntry(k, v, enc, versionstamp(ver), exp))
                size += len(k) + len(v) + 19
                if len(batch) >= CHUNK_ENTRIES or size >= CHUNK_BYTES:
                    _hand_over(SnapshotChunk(seq, encode_snapshot(batch, compression), len(batch)))
                    seq += 1
                    batch, size = [], 0
            if batch or seq == 0:
                _hand_over(SnapshotChunk(seq, encode_snapshot(batch, compression), len(batch)))
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


def insert_entries(conn: sqlite3.Connection, entries: list[SnapshotEntry]) -> None:
    """Write snapshot entries into a Deno-layout `kv` table (replacing any same key)."""
    conn.executemany(
        "insert or replace into kv (k, v, v_encoding, version, seq, expiration_ms) "
        "values (?, ?, ?, ?, ?, ?)",
        [
            (
                e.key,
                e.value,
                e.encoding,
                int.from_bytes(e.versionstamp[:8], "big"),
                int.from_bytes(e.versionstamp[8:], "big"),
                e.expire_at_ms,
            )
            for e in entries
        ],
    )
