"""The single writer thread: group commit, the version counter, the expiry sweeper.

Every change to the database goes through one thread that owns the write
connection. Requests that arrive while a commit is in flight are taken
together: each write runs inside its own SAVEPOINT (a failing write rolls back
alone), and the group shares one COMMIT and one fsync. A request is answered
only after the COMMIT that holds it returned.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from denokv.mutations import DELETE, Effects, apply_write, failed_checks
from denokv.operations import AtomicWrite, EngineClosed, WriteError, WriteResult, WriteStatus
from denokv.operations import versionstamp as make_versionstamp

log = logging.getLogger("denokv.writer")

MAX_GROUP = 512  # writes per COMMIT; bounds the latency one group adds to the next
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SWEEP_INTERVAL_MS = 60_000
NEVER = 2**62
MAX_IDLE_S = 3600.0

CommitListener = Callable[[sqlite3.Connection, int, Effects], None]
"""Called inside the open transaction for each successful write (version, effects)."""


@dataclass(slots=True)
class _Pending:
    write: AtomicWrite
    future: asyncio.Future[WriteResult] | Future[WriteResult]
    loop: asyncio.AbstractEventLoop | None


@dataclass(slots=True)
class _Job:
    """Arbitrary work that must run on the write connection (queue delivery, tooling)."""

    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any]


_STOP = object()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        on_touched: Callable[[list[bytes]], None],
        batch_timeout_ms: float | None = None,
        conn_lock: threading.Lock | None = None,
        rng: random.Random | None = None,
        sweep: bool = True,
    ) -> None:
        self._conn = conn
        self._on_touched = on_touched
        self._batch_timeout = (batch_timeout_ms or 0) / 1000
        self._lock = conn_lock or threading.Lock()
        self._rng = rng or random.SystemRandom()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._sweep_enabled = sweep
        self._next_sweep_ms = 0 if sweep else NEVER
        self.commit_listeners: list[CommitListener] = []
        self.on_enqueued: Callable[[], None] | None = None
        self.stats_commits = 0
        self.stats_writes = 0
        self.stats_sweeps = 0
        self.stats_expired = 0
        # Group sizes per bucket (upper bounds GROUP_BUCKETS), for the metrics endpoint.
        self.stats_group_sizes = [0] * (len(GROUP_BUCKETS) + 1)
        self._thread = threading.Thread(target=self._run, name="denokv-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- requests ---------------------------------------------------------------

    def submit(self, write: AtomicWrite) -> asyncio.Future[WriteResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()
        self._put(_Pending(write, future, loop))
        return future

    def submit_sync(self, write: AtomicWrite) -> Future[WriteResult]:
        future: Future[WriteResult] = Future()
        self._put(_Pending(write, future, None))
        return future

    def run_job(self, fn: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._put(_Job(fn, future))
        return future

    def _put(self, item: Any) -> None:
        if self._closed:
            raise EngineClosed()
        self._inbox.put(item)

    def close(self, timeout: float | None = None) -> None:
        """Finish every write already queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the loop ---------------------------------------------------------------

    def _run(self) -> None:
        if self._sweep_enabled:
            self._sweep()
        while True:
            wait = min(MAX_IDLE_S, max(0.0, (self._next_sweep_ms - now_ms()) / 1000))
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                if now_ms() >= self._next_sweep_ms:
                    self._sweep()
                continue
            if item is _STOP:
                self._drain_after_stop()
                return
            if isinstance(item, _Job):
                self._run_job(item)
                continue
            group = self._collect(item)
            self._commit_group(group)
            if now_ms() >= self._next_sweep_ms:
                self._sweep()

    def _collect(self, first: _Pending) -> list[_Pending]:
        group = [first]
        deadline = time.monotonic() + self._batch_timeout
        while len(group) < MAX_GROUP:
            try:
                if self._batch_timeout:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    item = self._inbox.get(timeout=remaining)
                else:
                    item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _Pending):
                # Keep order: anything else waits for the next turn of the loop.
                self._inbox.put(item)
                break
            group.append(item)
        return group

    def _drain_after_stop(self) -> None:
        pending: list[_Pending] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Pending):
                pending.append(item)
            elif isinstance(item, _Job):
                self._run_job(item)
        for start in range(0, len(pending), MAX_GROUP):
            self._commit_group(pending[start : start + MAX_GROUP])

    def _commit_group(self, group: list[_Pending]) -> None:
        conn = self._conn
        results: list[WriteResult | BaseException] = []
        touched: list[bytes] = []
        earliest: int | None = None
        enqueued = 0
        with self._lock:
            try:
                conn.execute("begin immediate")
                version = conn.execute("select version from data_version where k = 0").fetchone()[0]
                start_version = version
                now = now_ms()
                for pending in group:
                    result, effects, version = self._one_write(conn, pending.write, version, now)
                    results.append(result)
                    if effects is not None:
                        touched += effects.touched
                        enqueued += effects.enqueued
                        if effects.earliest_expiry is not None and (
                            earliest is None or effects.earliest_expiry < earliest
                        ):
                            earliest = effects.earliest_expiry
                if version != start_version:
                    conn.execute("update data_version set version = ? where k = 0", (version,))
                conn.execute("commit")
            except sqlite3.Error as exc:
                log.error("commit of %d writes failed: %s", len(group), exc)
                _rollback(conn)
                results = [exc] * len(group)
                touched = []
                earliest = None
                enqueued = 0
        self.stats_commits += 1
        self.stats_writes += len(group)
        self.stats_group_sizes[bisect.bisect_left(GROUP_BUCKETS, len(group))] += 1
        _resolve(group, results)
        if touched:
            self._on_touched(touched)
        if enqueued and self.on_enqueued is not None:
            self.on_enqueued()
        # Re-arm the sweeper for a nearer expiry (upstream waits for the old timer).
        if self._sweep_enabled and earliest is not None and earliest < self._next_sweep_ms:
            self._next_sweep_ms = earliest

    def _one_write(
        self, conn: sqlite3.Connection, write: AtomicWrite, version: int, now: int
    ) -> tuple[WriteResult | BaseException, Effects | None, int]:
        conn.execute("savepoint w")
        try:
            failed = failed_checks(conn, write.checks, now) if write.checks else []
            if failed:
                conn.execute("release w")
                failure = WriteResult(WriteStatus.CHECK_FAILURE, failed_checks=tuple(failed))
                return failure, None, version
            new_version = version + self._rng.randint(1, 9)
            effects = apply_write(conn, write, new_version, now)
            for listener in self.commit_listeners:
                listener(conn, new_version, effects)
            conn.execute("release w")
        except WriteError as exc:
            conn.execute("rollback to w")
            conn.execute("release w")
            return exc, None, version
        result = WriteResult(WriteStatus.SUCCESS, make_versionstamp(new_version))
        return result, effects, new_version

    def _run_job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            with self._lock:
                value = job.fn(self._conn)
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(value)

    # -- expiry -----------------------------------------------------------------

    def _sweep(self) -> None:
        """Delete expired keys in one commit that bumps the version by one."""
        conn = self._conn
        now = now_ms()
        deleted: list[bytes] = []
        with self._lock:
            try:
                conn.execute("begin immediate")
                deleted = [
                    row[0]
                    for row in conn.execute(
                        "select k from kv where expiration_ms >= 0 and expiration_ms <= ?", (now,)
                    )
                ]
                if deleted:
                    conn.executemany(DELETE, [(k,) for k in deleted])
                    conn.execute("update data_version set version = version + 1 where k = 0")
                    effects = Effects(touched=list(deleted))
                    effects.changes = [(k, None, 0, -1) for k in deleted]
                    version = conn.execute(
                        "select version from data_version where k = 0"
                    ).fetchone()[0]
                    for listener in self.commit_listeners:
                        listener(conn, version, effects)
                row = conn.execute(
                    "select min(expiration_ms) from kv where expiration_ms >= 0"
                ).fetchone()
                conn.execute("commit")
            except sqlite3.Error as exc:
                log.error("expiry sweep failed: %s", exc)
                _rollback(conn)
                deleted = []
                row = (None,)
        self.stats_sweeps += 1
        self.stats_expired += len(deleted)
        next_due = now + SWEEP_INTERVAL_MS
        if row[0] is not None:
            next_due = min(next_due, row[0])
        self._next_sweep_ms = next_due
        if deleted:
            log.debug("expired %d keys", len(deleted))
            self._on_touched(deleted)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("rollback")
    except sqlite3.Error:
        pass


def _resolve(group: Iterable[_Pending], results: list[WriteResult | BaseException]) -> None:
    """Hand results back; one wake-up per event loop rather than one per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
    for pending, result in zip(group, results, strict=True):
        if pending.loop is None:
            fut = pending.future
            assert isinstance(fut, Future)
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        else:
            by_loop.setdefault(pending.loop, []).append((pending.future, result))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # the loop is gone; nobody is waiting any more
            pass


def _settle(items: list[tuple[asyncio.Future[WriteResult], WriteResult | BaseException]]) -> None:
    for future, result in items:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
