"""The storage engine: one SQLite file in Deno's layout, one writer, many readers.

Reads run on their own connections (WAL lets them proceed beside the writer)
and each request sees one snapshot. Every change goes to the writer thread
(`denokv.writer`): atomic writes, which it commits in groups, and jobs from the
other parts (`run`), so the writer is the one place where the file is
committed to. Expired keys are never visible, whether or not the sweeper has
deleted them yet. Single-key reads are kept in a read cache that the writer
keeps right (`denokv.read_cache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from denokv import tables
from denokv import versionstamp as stamps
from denokv.engine_errors import DatabaseUnusable, EngineClosed
from denokv.health import Component
from denokv.operations import AtomicWrite, Entry, ReadRange, WriteResult, WriteStatus
from denokv.read_cache import DEFAULT_MAX_BYTES, Mark, ReadCache, WriteCounters
from denokv.redo_log import RedoLog
from denokv.tables import check_readable, migrate
from denokv.watch import Subscription, WatchHub
from denokv.writer import BUSY_TIMEOUT_MS, Tx, Writer, now_ms

log = logging.getLogger("denokv.engine")

MEMORY = ":memory:"
SYNCHRONOUS_MODES = ("off", "normal", "full", "extra")

T = TypeVar("T")
RowLists = list[list[tables.LiveRow]]
ReadFn = Callable[[sqlite3.Connection, Sequence[ReadRange]], RowLists]


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
        writer: bool = True,
        read_cache_bytes: int = DEFAULT_MAX_BYTES,
        write_counters: WriteCounters | None = None,
    ) -> None:
        """`writer=False` opens only read connections on a file another process writes
        (a server process beside the main one; see `denokv.server.processes`), whose
        writer's `write_counters` keep this engine's read cache right; without them it
        has no cache. `read_cache_bytes=0` turns the cache off (`denokv.read_cache`)."""
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
        self.redo: RedoLog | None = None  # redo capture, when a backup is configured
        # The writer's table of write counters (its own, or the main process's).
        self.write_counters = write_counters
        if write_counters is None and writer and not read_only:
            self.write_counters = WriteCounters()
        self.read_cache: ReadCache | None = None
        if self.write_counters is not None and read_cache_bytes > 0 and not read_only:
            self.read_cache = ReadCache(self.write_counters, read_cache_bytes)

        try:
            self._open(writer, readers, synchronous, batch_timeout_ms, redo_log, sweep_expired)
        except (sqlite3.Error, tables.SchemaError) as exc:
            self.close()
            raise DatabaseUnusable(self.path, exc) from exc
        if readers > 1 and self.path != MEMORY:  # `:memory:` has its one connection
            self._executor = ThreadPoolExecutor(readers, thread_name_prefix="denokv-read")

    def _open(
        self,
        writer: bool,
        readers: int,
        synchronous: str,
        batch_timeout_ms: float | None,
        redo_log: bool,
        sweep_expired: bool,
    ) -> None:
        """Open the connections this engine needs, the writer's first (it migrates)."""
        if self.path == MEMORY:
            # One connection serves reads and writes; a lock keeps them apart.
            conn = self._connect(f"file:denokv-{uuid.uuid4()}?mode=memory", uri=True, tracked=True)
            migrate(conn)
            self._shared_lock = threading.Lock()
            self._readers.put(conn)
            self._start_writer(conn, batch_timeout_ms, redo_log, sweep_expired)
            return

        if not writer and not self.read_only:
            for _ in range(max(1, readers)):
                reader = self._connect(self.path)
                reader.execute("pragma query_only = 1")
                self._readers.put(reader)
            check_readable(self._all_conns[0])
        elif self.read_only:
            for _ in range(max(1, readers)):
                conn = self._connect(f"{Path(self.path).absolute().as_uri()}?mode=ro", uri=True)
                self._readers.put(conn)
            check_readable(self._all_conns[0])
        else:
            conn = self._connect(self.path, tracked=True)
            mode = conn.execute("pragma journal_mode = wal").fetchone()[0]
            if mode != "wal":
                log.warning("journal_mode is %s, not wal: reads will wait for writes", mode)
            conn.execute(f"pragma synchronous = {synchronous}")
            migrate(conn)
            # Past start-up, a write waits only briefly for another process's lock
            # and is then answered with a retryable error rather than held.
            conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
            for _ in range(max(1, readers)):
                reader = self._connect(self.path)
                reader.execute("pragma query_only = 1")
                self._readers.put(reader)
            self._start_writer(conn, batch_timeout_ms, redo_log, sweep_expired)

    def _connect(self, target: str, uri: bool = False, tracked: bool = False) -> sqlite3.Connection:
        """A connection; `tracked` for the writer's (`tables.TrackedConnection`)."""
        factory = tables.TrackedConnection if tracked else sqlite3.Connection
        conn = sqlite3.connect(
            target,
            uri=uri,
            isolation_level=None,
            check_same_thread=False,
            timeout=5.0,
            factory=factory,
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
            on_wake_all=self.watches.wake_all,
            batch_timeout_ms=batch_timeout_ms,
            conn_lock=self._shared_lock,
            sweep=sweep,
            counters=self.write_counters,
        )
        if capture:
            self.redo = RedoLog()
            with tables.transaction(conn):
                self.redo.open(conn, tables.data_version(conn))
            self.writer.begin_listeners.append(self.redo.begin)
            self.writer.commit_listeners.append(self.redo.capture)
        self.writer.start()

    # -- reads ------------------------------------------------------------------

    def read_rows(self, ranges: Sequence[ReadRange]) -> list[list[tables.LiveRow]]:
        """Read every range from one snapshot, on the calling thread, as stored rows.

        Every `kv.get` passes here. Single keys come from the read cache when it can
        answer (`denokv.read_cache`); otherwise the connection is borrowed without a
        context manager, and the rows stay plain tuples (`convert.read_output`
        encodes them directly).
        """
        if self._closed:
            raise EngineClosed()
        cache = self.read_cache
        if cache is None:
            return self._read_file(_scan_all, ranges)
        now = now_ms()
        found = cache.lookup(ranges, now)
        if found is not None:
            return found
        marks = cache.marks(ranges)
        if marks is None:  # not all single keys, or a write to one of them in progress
            return self._read_file(_scan_all, ranges)

        def read_and_keep(conn: sqlite3.Connection, ranges: Sequence[ReadRange]) -> RowLists:
            return _read_points(conn, ranges, now, cache, marks)

        return self._read_file(read_and_keep, ranges)

    def _read_file(self, how: ReadFn, ranges: Sequence[ReadRange]) -> RowLists:
        """`how` on a borrowed read connection (and the shared lock of a `:memory:` file)."""
        readers = self._readers
        conn = readers.get()
        try:
            if self._shared_lock is None:
                return how(conn, ranges)
            with self._shared_lock:
                return how(conn, ranges)
        finally:
            readers.put(conn)

    def read(self, ranges: Sequence[ReadRange]) -> list[list[Entry]]:
        """Read every range from one snapshot, on the calling thread."""
        return [[_entry(row) for row in rows] for rows in self.read_rows(ranges)]

    @property
    def reads_inline(self) -> bool:
        """Reads run on the caller's thread (one reader): `read_rows` needs no await."""
        return self._executor is None

    async def snapshot_read_rows(self, ranges: Sequence[ReadRange]) -> list[list[tables.LiveRow]]:
        if self._executor is None:
            # Small indexed reads take microseconds: a thread hop would cost more.
            return self.read_rows(ranges)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.read_rows, ranges)

    async def snapshot_read(self, ranges: Sequence[ReadRange]) -> list[list[Entry]]:
        return [[_entry(row) for row in rows] for rows in await self.snapshot_read_rows(ranges)]

    def get_entries(self, keys: Sequence[bytes]) -> list[Entry | None]:
        """The current entry of each key (None when absent), from one snapshot."""
        results = self.read([ReadRange(k, k + b"\x00", 1) for k in keys])
        return [rows[0] if rows else None for rows in results]

    def expiry_times(self, keys: Sequence[bytes]) -> list[int | None]:
        """When each key expires (ms since the epoch); None without expiry or entry (console)."""
        if self._closed:
            raise EngineClosed()
        with self.reader() as conn:
            found = tables.expiry_times(conn, keys)
        return [found.get(k) for k in keys]

    def current_versionstamp(self) -> bytes:
        with self.reader() as conn:
            return stamps.from_version(tables.data_version(conn))

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

    async def run(self, fn: Callable[[Tx], T], *, name: str = "job") -> T:
        """Run `fn` on the writer in a transaction of its own (see `denokv.writer.Tx`)."""
        return await asyncio.wrap_future(self._writer().run_job(fn, name=name))

    def run_sync(self, fn: Callable[[Tx], T], *, name: str = "job") -> T:
        return self._writer().run_job(fn, name=name).result()

    async def run_batches(self, step: Callable[[Tx], bool], *, name: str) -> None:
        """Run `step` in one commit after another until it returns False."""
        await asyncio.wrap_future(self._writer().run_batches(step, name=name))

    def run_batches_sync(self, step: Callable[[Tx], bool], *, name: str) -> None:
        self._writer().run_batches(step, name=name).result()

    def _writer(self) -> Writer:
        if self.writer is None:
            raise RuntimeError("this database is open read-only")
        return self.writer

    # -- health -----------------------------------------------------------------

    def components(self) -> list[Component]:
        """The parts of the engine that report metrics, readiness and status."""
        found: list[Component] = [self.watches]
        if self.writer is not None:
            found.append(self.writer)
        if self.redo is not None:
            found.append(self.redo)
        return found

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
        if self.write_counters is not None:
            self.write_counters.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scan_all(conn: sqlite3.Connection, ranges: Sequence[ReadRange]) -> RowLists:
    now = now_ms()
    if len(ranges) == 1:  # one statement is a snapshot of its own
        r = ranges[0]
        return [tables.scan(conn, r.start, r.end, r.limit, r.reverse, now)]
    conn.execute("begin")
    try:
        return [tables.scan(conn, r.start, r.end, r.limit, r.reverse, now) for r in ranges]
    finally:
        conn.execute("commit")


def _read_points(
    conn: sqlite3.Connection,
    ranges: Sequence[ReadRange],
    now: int,
    cache: ReadCache,
    marks: list[Mark],
) -> RowLists:
    """Single-key ranges read from one snapshot, each row kept in the cache."""
    several = len(ranges) > 1
    if several:
        conn.execute("begin")
    try:
        out: RowLists = []
        for r, mark in zip(ranges, marks, strict=True):
            row, expiry = tables.point_row(conn, r.start)
            cache.store(r.start, row, expiry, mark)
            out.append([row] if row is not None and tables.is_live(expiry, now) else [])
        return out
    finally:
        if several:
            conn.execute("commit")


def _entry(row: tables.LiveRow) -> Entry:
    key, value, encoding, version, seq = row
    return Entry(key, value, encoding, stamps.from_version(version, seq))
