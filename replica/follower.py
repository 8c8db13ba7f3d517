"""Following a backup: bootstrap from a generation's snapshot, then apply its log segments.

Bootstrap downloads the snapshot ranges of the newest generation; each range
is stored and marked pulled in its own transaction, so an interrupted
bootstrap resumes where it stopped. Following polls the generation's logs;
each new segment is added to the redo log and applied in one transaction
together with the cursor, so a segment is never applied twice or partly.
When the primary starts a new generation, the follower finishes the old one
and steps over when the old one reaches the new snapshot's point; otherwise
it swaps in the new snapshot in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from denokv.engine import Engine
from replica import timetravel as tt
from timemachine import layout
from timemachine.codec import LogEntry, decode_segment, decode_snapshot
from timemachine.restore import Generation, list_generations
from timemachine.snapshot import insert_entries
from timemachine.store import ObjectStore

log = logging.getLogger("denokv.replica")

DOWNLOAD_CONCURRENCY = 16


@dataclass
class FollowerStats:
    bootstrapped: bool = False
    generation: str | None = None
    applied12: bytes = tt.ZERO12
    last_poll: float | None = None
    last_commit_ms: int | None = None
    newest_seen12: bytes = tt.ZERO12
    segments_applied: int = 0
    errors: int = 0

    def lag_seconds(self) -> float:
        """How far behind the newest segment seen; 0 when caught up."""
        if self.applied12 >= self.newest_seen12 or self.last_commit_ms is None:
            return 0.0
        return max(0.0, time.time() - self.last_commit_ms / 1000)

    def metrics(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "denokv_replica_applied_version",
            "Version (first 8 bytes of the versionstamp) served",
            value=int.from_bytes(self.applied12[:8], "big"),
        )
        yield GaugeMetricFamily(
            "denokv_replica_lag_seconds",
            "Seconds behind the newest segment in S3",
            value=self.lag_seconds(),
        )
        yield CounterMetricFamily(
            "denokv_replica_segments_applied", "Log segments applied", value=self.segments_applied
        )
        yield CounterMetricFamily("denokv_replica_poll_errors", "Failed polls", value=self.errors)
        if self.last_poll is not None:
            yield GaugeMetricFamily(
                "denokv_replica_last_poll_timestamp_seconds",
                "When S3 was last polled successfully",
                value=self.last_poll,
            )


class Follower:
    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        prefix: str,
        *,
        on_applied: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        if engine.writer is None:
            raise ValueError("a replica needs its database file writable")
        self.engine = engine
        self.store = store
        self.prefix = prefix
        self.stats = FollowerStats()
        self._on_applied = on_applied or engine.watches.notify
        self._known: dict[str, Generation] = {}  # a generation's differential never changes
        self._job(tt.create_tables)

    # -- one pass ---------------------------------------------------------------------

    async def sync(self, apply: bool = True) -> None:
        """Bootstrap if needed, fetch new segments, and (if `apply`) move to the latest."""
        state = await self._ajob(tt.get_state)
        generations = await list_generations(self.store, self.prefix, self._known)
        if not generations:
            raise LookupError("no complete backup generation in the store yet")
        newest = generations[-1]
        if state.get("bootstrapped") != "1":
            await self._bootstrap(newest)
            state = await self._ajob(tt.get_state)
        generation = state["generation"]
        await self._fetch_logs(generation, apply)
        if newest.name != generation and apply:
            await self._switch_generation(newest)
        self.stats.generation = (await self._ajob(tt.get_state)).get("generation")
        self.stats.applied12 = await self._ajob(tt.current12)
        self.stats.bootstrapped = True
        self.stats.last_poll = time.time()

    async def run(self, poll_interval_s: float, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.sync()
                attempt = 0
                delay = max(0.0, poll_interval_s - (time.monotonic() - started))
            except Exception as exc:
                self.stats.errors += 1
                log.warning("replica poll failed (%s: %s); retrying", type(exc).__name__, exc)
                delay = min(30.0, poll_interval_s * 2**attempt) * random.uniform(0.5, 1)
                attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    # -- bootstrap ----------------------------------------------------------------------

    async def _bootstrap(self, gen: Generation) -> None:
        state = await self._ajob(tt.get_state)
        if state.get("bootstrap_generation") != gen.name:
            # A fresh start (or a bootstrap of a generation that is gone): begin again.
            def reset(conn: sqlite3.Connection) -> None:
                with _transaction(conn):
                    for table in (
                        "kv",
                        "denokv_tt_redo",
                        "denokv_tt_undo",
                        "denokv_replica_snapshot_ranges",
                    ):
                        conn.execute(f"delete from {table}")
                    tt.set_state(conn, bootstrap_generation=gen.name, bootstrapped="0")

            await self._ajob(reset)
        objects = await self.store.list(
            layout.generation_prefix(self.prefix, gen.name) + "snapshots/"
        )
        done = {
            row[0]
            for row in await self._ajob(
                lambda c: c.execute(
                    "select object from denokv_replica_snapshot_ranges where pulled = 1"
                ).fetchall()
            )
        }
        todo = [o.key for o in objects if o.key not in done]
        log.info(
            "bootstrapping from generation %s: %d of %d snapshot ranges to fetch",
            gen.name,
            len(todo),
            len(objects),
        )
        slots = asyncio.Semaphore(DOWNLOAD_CONCURRENCY)

        async def fetch(key: str) -> None:
            async with slots:
                body = await self.store.get(key)
            rows = decode_snapshot(body, key)

            def store_range(conn: sqlite3.Connection) -> None:
                with _transaction(conn):
                    insert_entries(conn, rows)
                    conn.execute(
                        "insert or replace into denokv_replica_snapshot_ranges values (?, 1)",
                        (key,),
                    )

            await self._ajob(store_range)

        await asyncio.gather(*(fetch(k) for k in todo))
        base = gen.differential + tt.BOUNDARY

        def finish(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "update data_version set version = ? where k = 0",
                    (int.from_bytes(gen.differential[:8], "big"),),
                )
                tt.set_state(
                    conn,
                    bootstrapped="1",
                    generation=gen.name,
                    cursor="",
                    base_versionstamp12=base.hex(),
                    current_versionstamp12=base.hex(),
                )

        await self._ajob(finish)
        self.engine.watches.wake_all()
        log.info("bootstrap done at versionstamp %s", gen.differential.hex())

    # -- following ----------------------------------------------------------------------

    async def _fetch_logs(self, generation: str, apply: bool) -> None:
        state = await self._ajob(tt.get_state)
        cursor = state.get("cursor") or None
        logs = await self.store.list(
            layout.generation_prefix(self.prefix, generation) + "logs/", start_after=cursor
        )
        for obj in logs:
            name = layout.parse_log_name(obj.key)
            self.stats.newest_seen12 = max(self.stats.newest_seen12, name.last12)
            body = await self.store.get(obj.key)
            segment_time, entries = decode_segment(body, obj.key)
            timed = [(e, _commit_time(e, segment_time)) for e in entries]
            moved = await self._ajob(_apply_segment, obj.key, timed, apply)
            if moved is not None:
                self.stats.segments_applied += 1
                self.stats.last_commit_ms = moved.last_commit_ms or self.stats.last_commit_ms
                self.stats.applied12 = moved.current12
                if moved.touched:
                    self._on_applied(moved.touched)

    async def _switch_generation(self, newest: Generation) -> None:
        current = await self._ajob(tt.current12)
        if current >= newest.differential + tt.BOUNDARY:
            # The old generation brought us to (or past) the new snapshot: keep going.
            await self._ajob(lambda c: _commit(c, generation=newest.name, cursor=""))
            log.info("following generation %s", newest.name)
            return
        log.info("generation %s starts past our state; loading its snapshot", newest.name)
        await self._replace_with_snapshot(newest)

    async def _replace_with_snapshot(self, gen: Generation) -> None:
        objects = await self.store.list(
            layout.generation_prefix(self.prefix, gen.name) + "snapshots/"
        )
        rows = []
        for obj in objects:
            rows += decode_snapshot(await self.store.get(obj.key), obj.key)
        base = gen.differential + tt.BOUNDARY

        def swap(conn: sqlite3.Connection) -> None:
            # One transaction: readers see the old state or the new one, never a mix.
            with _transaction(conn):
                for table in ("kv", "denokv_tt_redo", "denokv_tt_undo"):
                    conn.execute(f"delete from {table}")
                insert_entries(conn, rows)
                conn.execute(
                    "update data_version set version = ? where k = 0",
                    (int.from_bytes(gen.differential[:8], "big"),),
                )
                tt.set_state(
                    conn,
                    generation=gen.name,
                    cursor="",
                    bootstrap_generation=gen.name,
                    base_versionstamp12=base.hex(),
                    current_versionstamp12=base.hex(),
                )

        await self._ajob(swap)
        self.engine.watches.wake_all()

    # -- plumbing -------------------------------------------------------------------------

    def _job(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        assert self.engine.writer is not None
        return self.engine.writer.run_job(fn).result()

    async def _ajob(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.engine.writer is not None
        return await asyncio.wrap_future(self.engine.writer.run_job(lambda c: fn(c, *args)))


def _apply_segment(
    conn: sqlite3.Connection, key: str, timed: list[tuple[LogEntry, int]], apply: bool
) -> tt.Moved | None:
    with _transaction(conn):
        current = tt.current12(conn)
        tt.add_redo(conn, timed, current)
        tt.set_state(conn, cursor=key)
        if not apply:
            return None
        return tt.checkout(conn, tt.LATEST)


def _commit(conn: sqlite3.Connection, **state: str) -> None:
    with _transaction(conn):
        tt.set_state(conn, **state)


def _commit_time(e: LogEntry, segment_time: int) -> int:
    return e.commit_time_ms if e.commit_time_ms is not None else segment_time


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Any:
    conn.execute("begin immediate")
    try:
        yield
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("commit")
