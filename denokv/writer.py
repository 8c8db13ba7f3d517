"""The single writer thread: the only place where the database file is committed to.

Every change goes through one thread that owns the write connection, in units
of work of three kinds:

- **groups of atomic writes** (group commit): each write runs inside its own
  SAVEPOINT, so a failing write rolls back alone, and the group shares one
  COMMIT and one fsync. A write is answered only after that COMMIT returned.
- **jobs** handed in by other parts (queue delivery, the shipper's trim, the
  replica's follower): a function that changes tables through `denokv.tables`
  inside the transaction it is given and records what it changed on `Tx`.
- **expiry sweeps**, in bounded batches.

For every unit the writer opens the transaction, bumps the version counter,
runs the commit listeners (redo capture), commits, and then wakes watchers, so
no part can skip the backup or the watchers. A large job is cut into batches of
one commit each, with the queued writes served in between.

The thread cannot be killed by a unit: whatever a unit raises rolls that unit
back, fails only its requests (a storage fault such as a full disk with a
retryable `StorageFault`, anything else with a `WriteError` that names it), is
logged and counted, and the thread goes on. Should the thread stop anyway,
every request from then on fails at once with `WriterStopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from denokv import tables
from denokv import versionstamp as stamps
from denokv.effects import Effects, QueueChangeKind
from denokv.engine_errors import EngineClosed, StorageFault, WriteError, WriterStopped
from denokv.mutations import apply_write, failed_checks
from denokv.operations import AtomicWrite, WriteResult, WriteStatus
from denokv.read_cache import CacheKeeper, WriteCounters
from denokv.validation import check_write
from denokv.writer_stats import StorageFaults, WriterStats, writer_metrics

log = logging.getLogger("denokv.writer")

MAX_GROUP = 512  # writes per COMMIT; bounds the latency one group adds to the next
SWEEP_INTERVAL_MS = 60_000
# Expired keys per commit: far below the redo log's 65,535 per commit, and small
# enough that a write arriving during a sweep waits ~10 ms, not ~60 (bench/writer.py).
SWEEP_BATCH = 500
SWEEP_RETRY_MS = 1_000
NEVER = 2**62
MAX_IDLE_S = 3600.0
BUSY_TIMEOUT_MS = 1_000  # how long a commit waits for another process's write lock

T = TypeVar("T")
CommitListener = Callable[[sqlite3.Connection, int, Effects], None]
"""Called inside the open transaction for each new commit version (version, effects)."""
BeginListener = Callable[[sqlite3.Connection, int], None]
"""Called at the start of every unit with the version found in the file."""

# SQLite result codes (the low byte of an extended code) that mean "the storage
# cannot take this write now": retrying later may well succeed.
_STORAGE_FAULTS = {
    5: ("locked", "The database file is locked by another process; try again later."),
    6: ("locked", "The database file is locked by another process; try again later."),
    7: ("out of memory", "The database ran out of memory; try again later."),
    8: ("read-only", "The database file cannot be written at the moment; try again later."),
    10: ("I/O error", "The database could not write to its disk; try again later."),
    13: ("disk full", "The database disk is full; try again later."),
    14: ("cannot open", "The database file cannot be opened; try again later."),
}


class Tx:
    """A unit of work's handle on the writer's open transaction.

    Jobs change tables through `conn` and record what they changed in
    `effects`; `new_version()` gives the unit a commit version of its own (the
    writer stores it and runs the commit listeners), `set_version()` takes one
    from elsewhere (a replica applying the primary's log: nothing is captured).
    """

    __slots__ = (
        "_fresh",
        "_rng",
        "base_version",
        "conn",
        "effects",
        "now_ms",
        "version",
        "wake_all",
    )

    def __init__(self, conn: sqlite3.Connection, version: int, rng: random.Random) -> None:
        self.conn = conn
        self.base_version = version
        self.version = version
        self.now_ms = now_ms()
        self.effects = Effects()
        self.wake_all = False  # wake every watcher (the whole state was replaced)
        self._rng = rng
        self._fresh = False

    def new_version(self, step: int | None = None) -> int:
        """This unit's commit version: the counter moved on by `step` (default 1-9, as Deno)."""
        if not self._fresh:
            self.version += step if step is not None else self._rng.randint(1, 9)
            self._fresh = True
        return self.version

    def set_version(self, version: int) -> None:
        self.version = version


@dataclass(slots=True)
class _Pending:
    write: AtomicWrite
    future: asyncio.Future[WriteResult] | Future[WriteResult]
    loop: asyncio.AbstractEventLoop | None
    queued_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Job:
    """Work on the write connection; `batched` jobs return (value, more) and run again."""

    fn: Callable[[Tx], Any]
    future: Future[Any]
    name: str
    batched: bool = False
    started: bool = False


_STOP = object()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def storage_fault(exc: BaseException) -> StorageFault | None:
    """The retryable condition an SQLite error stands for, if it is one."""
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    found = _STORAGE_FAULTS.get(code & 0xFF)
    return None if found is None else StorageFault(found[0], found[1])


class Writer:
    name = "writer"

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        on_touched: Callable[[list[bytes]], None],
        on_wake_all: Callable[[], None] | None = None,
        batch_timeout_ms: float | None = None,
        conn_lock: threading.Lock | None = None,
        rng: random.Random | None = None,
        sweep: bool = True,
        counters: WriteCounters | None = None,
    ) -> None:
        self._conn = conn
        self._on_touched = on_touched
        self._on_wake_all = on_wake_all
        self._batch_timeout = (batch_timeout_ms or 0) / 1000
        self._lock = conn_lock or threading.Lock()
        # Tells the read caches of every change (`denokv.read_cache`).
        self._keeper = CacheKeeper(counters, self._lock) if counters is not None else None
        self._rng = rng or random.SystemRandom()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._sweep_enabled = sweep
        self._next_sweep_ms = 0 if sweep else NEVER
        self.commit_listeners: list[CommitListener] = []
        self.begin_listeners: list[BeginListener] = []
        self.on_enqueued: Callable[[], None] | None = None
        self.stats = WriterStats()
        self.faults = StorageFaults()
        self.stopped: str | None = None  # why the thread stopped, if it did
        self._in_hand: list[Any] = []  # requests taken from the inbox and not yet answered
        self._thread = threading.Thread(target=self._run, name="denokv-writer", daemon=True)

    def start(self) -> None:
        with self._lock:
            self.stats.data_version = tables.data_version(self._conn)
            self.stats.queue_waiting, self.stats.queue_in_flight = tables.queue_counts(self._conn)
        self._thread.start()

    # -- requests ---------------------------------------------------------------

    def submit(self, write: AtomicWrite) -> asyncio.Future[WriteResult]:
        check_write(write)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()
        self._put(_Pending(write, future, loop))
        return future

    def submit_sync(self, write: AtomicWrite) -> Future[WriteResult]:
        check_write(write)
        future: Future[WriteResult] = Future()
        self._put(_Pending(write, future, None))
        return future

    def run_job(self, fn: Callable[[Tx], T], *, name: str = "job") -> Future[T]:
        """Run `fn` in a transaction of its own; its result (or exception) comes back."""
        future: Future[T] = Future()
        self._put(_Job(fn, future, name))
        return future

    def run_batches(self, step: Callable[[Tx], bool], *, name: str) -> Future[None]:
        """Run `step` in one commit after another until it returns False.

        Writes queued meanwhile are served between two batches, so a large job
        (a bulk delete, a snapshot swap) never holds up the database for long.
        """
        future: Future[None] = Future()
        self._put(_Job(lambda tx: (None, step(tx)), future, name, batched=True))
        return future

    def _put(self, item: Any) -> None:
        if self._closed:
            raise EngineClosed()
        if self.stopped is not None:
            raise WriterStopped(self._stopped_text())
        self._inbox.put(item)
        if self.stopped is not None:  # the thread died between the check and the put
            self._fail_queued()

    @property
    def alive(self) -> bool:
        """False once the thread stopped for any reason but a requested close."""
        if self.stopped is not None:
            return False
        return self._closed or self._thread.ident is None or self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Finish every write already queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- health ------------------------------------------------------------------

    def metrics(self) -> Iterable[Any]:
        return writer_metrics(self.stats, self.faults, self.alive)

    def problems(self) -> list[str]:
        return [] if self.alive else [f"the writer stopped ({self.stopped}); restart the server"]

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "alive": self.alive,
            "stopped": self.stopped,
            "data_version": s.data_version,
            "commits_total": s.commits,
            "writes_total": s.writes,
            "jobs_total": s.jobs,
            "expired_keys_total": s.expired,
            "queue_waiting": s.queue_waiting,
            "queue_in_flight": s.queue_in_flight,
            "failures": dict(s.failures),
            "storage_faults": sorted(self.faults.active),
        }

    # -- the loop ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # nothing should get here; if it does, say so and fail fast
            self.stopped = f"{type(exc).__name__}: {exc}"
            log.critical("the writer thread stopped; every write now fails", exc_info=exc)
            self._fail_queued()

    def _serve(self) -> None:
        while True:
            item = self._next_item()
            if item is _STOP:
                self._drain_after_stop()
                return
            if item is not None:
                self._in_hand = [item]
                self._handle(item)
                self._in_hand = []
            if self._sweep_enabled and now_ms() >= self._next_sweep_ms:
                self._sweep_batch()
            if self._keeper is not None and self._keeper.due() == 0:
                self._keeper.look_for_other_writers(self._conn)

    def _next_item(self) -> Any:
        """The next request, or None when it is time for a sweep batch."""
        wait = min(MAX_IDLE_S, max(0.0, (self._next_sweep_ms - now_ms()) / 1000))
        if self._keeper is not None:
            wait = min(wait, self._keeper.due())
        try:
            return self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _handle(self, item: Any) -> None:
        if isinstance(item, _Job):
            self._run_job(item)
        else:
            self._commit_group(self._collect(item))

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
            self._in_hand.append(item)
        return group

    def _drain_after_stop(self) -> None:
        pending: list[_Pending] = []
        for item in self._take_all():
            if isinstance(item, _Pending):
                pending.append(item)
            elif isinstance(item, _Job):
                # A batched job gets one more batch, then is told the engine closed.
                self._run_job(item, last_turn=True)
        for start in range(0, len(pending), MAX_GROUP):
            self._commit_group(pending[start : start + MAX_GROUP])

    def _take_all(self) -> list[Any]:
        items = []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items

    def _fail_queued(self) -> None:
        error = WriterStopped(self._stopped_text())
        in_hand, self._in_hand = self._in_hand, []
        for item in in_hand + self._take_all():
            if isinstance(item, _Pending):
                _resolve([item], [error])
            elif isinstance(item, _Job) and not item.future.done():
                with contextlib.suppress(Exception):
                    item.future.set_exception(error)

    def _stopped_text(self) -> str:
        return f"The database cannot take writes: its writer stopped ({self.stopped})."

    # -- units ------------------------------------------------------------------

    def _transaction(self, body: Callable[[Tx], T]) -> tuple[T, Tx]:
        """Run one unit: begin, body, version and listeners, commit. Raises on failure."""
        conn = self._conn
        keeper = self._keeper
        changing: set[int] = set()
        with self._lock:
            conn.execute("begin immediate")
            try:
                version = tables.data_version(conn)
                for listener in self.begin_listeners:
                    listener(conn, version)
                tx = Tx(conn, version, self._rng)
                value = body(tx)
                if tx.version != tx.base_version:
                    tables.set_data_version(conn, tx.version)
                if tx._fresh:
                    for commit_listener in self.commit_listeners:
                        commit_listener(conn, tx.version, tx.effects)
                if keeper is not None:
                    changing = keeper.begin(conn)
                conn.execute("commit")
            except BaseException:
                tables.rollback(conn)
                raise
            finally:
                if keeper is not None:
                    keeper.end(conn, changing)
        if self.faults.active:
            self.faults.cleared()
        return value, tx

    def _after_commit(self, effects: Effects, version: int, wake_all: bool = False) -> None:
        stats = self.stats
        stats.data_version = version
        for change in effects.queue_changes:
            kind = change.kind
            if kind is QueueChangeKind.QUEUE_PUT:
                stats.queue_waiting += 1
            elif kind is QueueChangeKind.QUEUE_DELETE:
                stats.queue_waiting -= 1
            elif kind is QueueChangeKind.RUNNING_PUT:
                stats.queue_in_flight += 1
            else:
                stats.queue_in_flight -= 1
        if wake_all and self._on_wake_all is not None:
            self._on_wake_all()
        elif effects.touched:
            self._on_touched(effects.touched)
        if effects.enqueued and self.on_enqueued is not None:
            self.on_enqueued()
        # Re-arm the sweeper for a nearer expiry (upstream waits for the old timer).
        earliest = effects.earliest_expiry
        if self._sweep_enabled and earliest is not None and earliest < self._next_sweep_ms:
            self._next_sweep_ms = earliest

    def _failed(self, what: str, exc: BaseException, refused: int = 1) -> BaseException:
        """Log and count a unit that was rolled back; the error its callers get."""
        fault = storage_fault(exc)
        if fault is not None:
            self.stats.record_failure(fault.kind)
            self.faults.failing(fault.kind, str(exc), refused)
            return fault
        self.stats.record_failure(type(exc).__name__)
        log.error("%s failed and was rolled back", what, exc_info=exc)
        return exc

    def _run_job(self, job: _Job, last_turn: bool = False) -> None:
        if not job.started:
            if not job.future.set_running_or_notify_cancel():
                return
            job.started = True
        try:
            result, tx = self._transaction(job.fn)
        except Exception as exc:
            job.future.set_exception(self._failed(f"job {job.name!r}", exc))
            return
        self.stats.jobs += 1
        self._after_commit(tx.effects, tx.version, tx.wake_all)
        if not job.batched:
            job.future.set_result(result)
            return
        value, more = result
        if not more:
            job.future.set_result(value)
        elif last_turn:
            job.future.set_exception(EngineClosed())
        else:
            self._inbox.put(job)  # the next batch, after the writes queued meanwhile

    # -- group commit -------------------------------------------------------------

    def _commit_group(self, group: list[_Pending]) -> None:
        began = time.monotonic()
        waited = sum(began - pending.queued_at for pending in group)
        outcomes: list[tuple[WriteResult | BaseException, Effects | None]] = []

        def body(tx: Tx) -> None:
            version = tx.version
            for pending in group:
                outcome = self._one_write(tx.conn, pending.write, version, tx.now_ms)
                outcomes.append(outcome)
                result, effects = outcome
                if effects is not None and isinstance(result, WriteResult):  # it committed
                    version = stamps.version_of(result.versionstamp)
            tx.set_version(version)

        try:
            _, tx = self._transaction(body)
        except Exception as exc:
            if storage_fault(exc) is None and len(group) > 1:
                # Not the disk: find the write that fails, and commit the others.
                for pending in group:
                    self._commit_group([pending])
                return
            error = self._failed(f"commit of {len(group)} writes", exc, len(group))
            if not isinstance(error, StorageFault):
                error = WriteError(f"The write could not be applied: {type(exc).__name__}: {exc}")
            self.stats.record_group(len(group))
            _resolve(group, [error] * len(group))
            return
        # Counted before the answers go out: whoever gets one may read the figures.
        self.stats.record_group(len(group), waited, time.monotonic() - began)
        _resolve(group, [result for result, _ in outcomes])
        effects = Effects()
        for _, one in outcomes:
            if one is not None:
                effects.extend(one)
        self._after_commit(effects, tx.version)

    def _one_write(
        self, conn: sqlite3.Connection, write: AtomicWrite, version: int, now: int
    ) -> tuple[WriteResult | BaseException, Effects | None]:
        """One write inside its own SAVEPOINT; it rolls back alone if anything fails."""
        conn.execute("savepoint w")
        try:
            failed = failed_checks(conn, write.checks, now) if write.checks else []
            if failed:
                conn.execute("release w")
                return WriteResult(WriteStatus.CHECK_FAILURE, failed_checks=tuple(failed)), None
            new_version = version + self._rng.randint(1, 9)
            effects = apply_write(conn, write, new_version, now)
            for listener in self.commit_listeners:
                listener(conn, new_version, effects)
            conn.execute("release w")
        except Exception as exc:
            if storage_fault(exc) is not None:
                raise  # the disk, not this write: the whole group fails and is retried
            conn.execute("rollback to w")
            conn.execute("release w")
            if isinstance(exc, WriteError):
                return exc, None
            self._failed("a write", exc)
            return WriteError(f"The write could not be applied: {type(exc).__name__}: {exc}"), None
        return WriteResult(WriteStatus.SUCCESS, stamps.from_version(new_version)), effects

    # -- expiry -----------------------------------------------------------------

    def _sweep_batch(self) -> None:
        """Delete up to SWEEP_BATCH expired keys in one commit that bumps the version by one."""
        found: list[int | None] = []

        def step(tx: Tx) -> None:
            keys = tables.expired_keys(tx.conn, tx.now_ms, SWEEP_BATCH)
            if keys:
                tables.delete_many(tx.conn, keys)
                tx.new_version(step=1)
                for key in keys:
                    tx.effects.delete_key(key)
                tx.effects.touched += keys
            found.append(len(keys))
            found.append(tables.earliest_expiry(tx.conn))

        try:
            _, tx = self._transaction(step)
        except Exception as exc:
            self._failed("expiry sweep", exc)
            self._next_sweep_ms = now_ms() + SWEEP_RETRY_MS
            return
        deleted, earliest = found
        assert deleted is not None
        self._next_sweep_ms = now_ms() + SWEEP_INTERVAL_MS
        if deleted >= SWEEP_BATCH:
            self._next_sweep_ms = 0  # more to do: the next batch after what is queued
        elif earliest is not None:
            self._next_sweep_ms = min(self._next_sweep_ms, earliest)
        if deleted:
            self.stats.sweeps += 1
            self.stats.expired += deleted
            log.debug("expired %d keys", deleted)
            self._after_commit(tx.effects, tx.version)


def _resolve(group: Iterable[_Pending], results: list[WriteResult | BaseException]) -> None:
    """Hand results back; one wake-up per event loop rather than one per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
    for pending, result in zip(group, results, strict=True):
        if pending.loop is None:
            fut = pending.future
            assert isinstance(fut, Future)
            if fut.done():
                continue
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
