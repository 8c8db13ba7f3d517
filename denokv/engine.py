"""The storage engine: one SQLite file in Deno's layout, one writer, many readers.

Reads run on their own connections (WAL lets them proceed beside the writer)
and each request sees one snapshot. Writes go to the writer thread, which
commits them in groups. Expired keys are never visible, whether or not the
sweeper has deleted them yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from denokv import redo_log
from denokv.operations import (
    AtomicWrite,
    EngineClosed,
    Entry,
    ReadRange,
    WriteResult,
    WriteStatus,
    versionstamp,
)
from denokv.schema import check_readable, migrate
from denokv.watch import Subscription, WatchHub
from denokv.writer import Writer, now_ms

log = logging.getLogger("denokv.engine")

MEMORY = ":memory:"
SYNCHRONOUS_MODES = ("off", "normal", "full", "extra")

_LIVE = "(expiration_ms < 0 or expiration_ms > ?)"
_FORWARD = (
    "select k, v, v_encoding, version from kv "
    f"where k >= ? and k < ? and {_LIVE} order by k asc limit ?"
)
_REVERSE = (
    "select k, v, v_encoding, version from kv "
    f"where k >= ? and k < ? and {_LIVE} order by k desc limit ?"
)


class Engine:
    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        synchronous: str = "full",
        batch_timeout_ms: float | None = None,
        readers: int = 1,
        redo_log: bool = False,
        sweep_expired: bool = True,
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = str(path)
        self.read_only = read_only
        self.watches = WatchHub()
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_conns: list[sqlite3.Connection] = []
        self._shared_lock: threading.Lock | None = None
        self.writer: Writer | None = None

        if self.path == MEMORY:
            # One connection serves reads and writes; a lock keeps them apart.
            conn = self._connect(f"file:denokv-{uuid.uuid4()}?mode=memory", uri=True)
            migrate(conn)
            self._shared_lock = threading.Lock()
            self._readers.put(conn)
            self._start_writer(conn, batch_timeout_ms, redo_log, sweep_expired)
            return

        if read_only:
            for _ in range(max(1, readers)):
                conn = self._connect(f"{Path(self.path).absolute().as_uri()}?mode=ro", uri=True)
                self._readers.put(conn)
            check_readable(self._all_conns[0])
        else:
            conn = self._connect(self.path)
            mode = conn.execute("pragma journal_mode = wal").fetchone()[0]
            if mode != "wal":
                log.warning("journal_mode is %s, not wal: reads will wait for writes", mode)
            conn.execute(f"pragma synchronous = {synchronous}")
            migrate(conn)
            for _ in range(max(1, readers)):
                reader = self._connect(self.path)
                reader.execute("pragma query_only = 1")
                self._readers.put(reader)
            self._start_writer(conn, batch_timeout_ms, redo_log, sweep_expired)
        if readers > 1:
            self._executor = ThreadPoolExecutor(readers, thread_name_prefix="denokv-read")

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            target, uri=uri, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        self._all_conns.append(conn)
        return conn

    def _start_writer(
        self,
        conn: sqlite3.Connection,
        batch_timeout_ms: float | None,
        capture: bool,
        sweep: bool,
    ) -> None:
        self.writer = Writer(
            conn,
            on_touched=self.watches.notify,
            batch_timeout_ms=batch_timeout_ms,
            conn_lock=self._shared_lock,
            sweep=sweep,
        )
        if capture:
            redo_log.create_tables(conn)
            self.writer.commit_listeners.append(redo_log.capture)
        self.writer.start()

    # -- reads ------------------------------------------------------------------

    def read(self, ranges: Sequence[ReadRange]) -> list[list[Entry]]:
        """Read every range from one snapshot, on the calling thread."""
        if self._closed:
            raise EngineClosed()
        with self.reader() as conn:
            now = now_ms()
            if len(ranges) == 1:
                return [_scan(conn, ranges[0], now)]
            conn.execute("begin")
            try:
                return [_scan(conn, r, now) for r in ranges]
            finally:
                conn.execute("commit")

    async def snapshot_read(self, ranges: Sequence[ReadRange]) -> list[list[Entry]]:
        if self._executor is None:
            # Small indexed reads take microseconds: a thread hop would cost more.
            return self.read(ranges)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.read, ranges)

    def get_entries(self, keys: Sequence[bytes]) -> list[Entry | None]:
        """The current entry of each key (None when absent), from one snapshot."""
        results = self.read([ReadRange(k, k + b"\x00", 1) for k in keys])
        return [rows[0] if rows else None for rows in results]

    def current_versionstamp(self) -> bytes:
        with self.reader() as conn:
            row = conn.execute("select version from data_version where k = 0").fetchone()
        return versionstamp(row[0])

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """Borrow a read connection for a short query of one's own (metrics, checks)."""
        conn = self._readers.get()
        try:
            if self._shared_lock is not None:
                with self._shared_lock:
                    yield conn
            else:
                yield conn
        finally:
            self._readers.put(conn)

    # -- writes -----------------------------------------------------------------

    async def atomic_write(self, write: AtomicWrite) -> WriteResult:
        if self.writer is None:
            return WriteResult(WriteStatus.WRITE_DISABLED)
        return await self.writer.submit(write)

    def atomic_write_sync(self, write: AtomicWrite) -> WriteResult:
        if self.writer is None:
            return WriteResult(WriteStatus.WRITE_DISABLED)
        return self.writer.submit_sync(write).result()

    # -- watch ------------------------------------------------------------------

    def watch(self, keys: Sequence[bytes]) -> Subscription:
        return self.watches.subscribe(keys)

    # -- lifecycle ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        if self.writer is not None:
            self.writer.close()
        self.watches.wake_all()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        for conn in self._all_conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scan(conn: sqlite3.Connection, r: ReadRange, now: int) -> list[Entry]:
    if r.start >= r.end:
        return []
    rows = conn.execute(_REVERSE if r.reverse else _FORWARD, (r.start, r.end, now, r.limit))
    return [Entry(k, v, enc, versionstamp(ver)) for k, v, enc, ver in rows]
