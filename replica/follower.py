"""Following a backup: bootstrap from a generation's snapshot, then apply its log segments.

Bootstrap downloads the snapshot ranges of the newest generation; each range
is stored and marked pulled in its own transaction, so an interrupted
bootstrap resumes where it stopped. Following polls the generation's logs;
each new segment must follow the one before it (`timemachine.chain`: a gap or a
fork stops the replica where it is, says why in `/readyz`, and is counted), and
is added to the redo log and applied in one transaction together with the
cursor, so a segment is never applied twice or partly.

When the primary starts a new generation, the follower steps into it only if
its lineage says it continues the generation being followed at a point the
replica has not passed, and the old log is complete up to where it was closed.
Otherwise (a restored or rolled-back primary, another primary, a gap) it
stages the new snapshot beside the served data (a range at a time) and swaps it
in with one transaction: the replica never serves a mixed history.

Every change to the file is a job on the engine's writer, so watchers of the
keys that changed are woken by the writer like on a primary. The undo log kept
for time travel is trimmed to `undo_window_s` as the replica goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from denokv import tables
from denokv import versionstamp as stamps
from denokv.engine import Engine
from denokv.health import counters, gauges
from denokv.writer import Tx
from replica import staging
from timemachine import layout
from timemachine import timetravel as tt
from timemachine.chain import Chain, ChainError
from timemachine.codec import LogEntry, SnapshotRange, decode_segment, decode_snapshot_range
from timemachine.generations import Generation, list_generations, recovery_points
from timemachine.snapshot import store_range
from timemachine.store import ObjectStore

log = logging.getLogger("denokv.replica")

DOWNLOAD_CONCURRENCY = 8  # snapshot ranges in memory at once, as restore


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
    chain_errors: int = 0
    chain_problem: str | None = None  # a gap or fork in the log being followed
    rebootstraps: int = 0

    def lag_seconds(self) -> float:
        """How far behind the newest segment seen; 0 when caught up."""
        if self.applied12 >= self.newest_seen12 or self.last_commit_ms is None:
            return 0.0
        return max(0.0, time.time() - self.last_commit_ms / 1000)

    def metrics(self) -> Any:
        yield from gauges(
            (
                "denokv_replica_applied_version",
                "Version (first 8 bytes of the versionstamp) served",
                stamps.version_of(self.applied12),
            ),
            (
                "denokv_replica_lag_seconds",
                "Seconds behind the newest segment in S3",
                self.lag_seconds(),
            ),
        )
        yield from counters(
            ("denokv_replica_segments_applied", "Log segments applied", self.segments_applied),
            ("denokv_replica_poll_errors", "Failed polls", self.errors),
            (
                "denokv_replica_chain_errors",
                "Gaps or forks found in the log being followed",
                self.chain_errors,
            ),
            (
                "denokv_replica_snapshot_loads",
                "New snapshots loaded because a generation did not continue the one followed",
                self.rebootstraps,
            ),
        )
        if self.last_poll is not None:
            yield from gauges(
                (
                    "denokv_replica_last_poll_timestamp_seconds",
                    "When S3 was last polled successfully",
                    self.last_poll,
                )
            )


class Follower:
    name = "replica"

    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        prefix: str,
        *,
        undo_window_s: float | None = None,
        location: dict[str, str | None] | None = None,
    ) -> None:
        if engine.writer is None:
            raise ValueError("a replica needs its database file writable")
        self.engine = engine
        self.store = store
        self.prefix = prefix
        self.stats = FollowerStats()
        self._known: dict[str, Generation] = {}  # a generation's differential never changes
        self.stale_after_s = 10.0  # /readyz fails when S3 was not polled for this long
        self.undo_window_s = undo_window_s  # None: keep the whole undo log (pitr tools)
        self.location = location or {"prefix": prefix}  # where the backup lives, for people
        self._listing: list[Generation] = []
        engine.run_sync(self._create_tables, name="replica tables")

    @staticmethod
    def _create_tables(tx: Tx) -> None:
        tt.create_tables(tx.conn)
        staging.create_tables(tx.conn)

    # -- one pass ---------------------------------------------------------------------

    async def sync(self, apply: bool = True) -> None:
        """Bootstrap if needed, fetch new segments, and (if `apply`) move to the latest."""
        state = await self._state()
        generations = await list_generations(self.store, self.prefix, self._known)
        if not generations:
            raise LookupError("no complete backup generation in the store yet")
        self._listing = generations
        newest = generations[-1]
        if state.get("bootstrapped") != "1":
            await self._bootstrap(newest)
            state = await self._state()
        self.stats.bootstrapped = True
        generation = state["generation"]
        for _ in range(len(generations) + 1):
            try:
                await self._fetch_logs(generation, apply)
            except ChainError as exc:
                self._chain_failed(exc)
                if newest.name == generation:
                    raise
            if newest.name == generation:
                break
            # One generation at a time along the lineage, fetching each one's logs, so
            # one pass reaches the newest and keeps every commit in between.
            target = _successor(generations, generation) or newest
            if self.stats.chain_problem is not None:
                target = newest
            await self._switch_generation(target, apply)
            generation = target.name
        state = await self._state()
        self.stats.generation = state.get("generation")
        self.stats.applied12 = _current12(state)
        self.stats.bootstrapped = True
        self.stats.last_poll = time.time()
        if apply and self.undo_window_s is not None:
            cutoff = int((time.time() - self.undo_window_s) * 1000)
            await self.engine.run(lambda tx: tt.trim_undo(tx.conn, cutoff), name="undo trim")

    def _chain_failed(self, exc: ChainError) -> None:
        if self.stats.chain_problem != str(exc):
            log.error("not applying the backup log further: %s", exc)
            self.stats.chain_errors += 1
        self.stats.chain_problem = str(exc)

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
        state = await self._state()
        if state.get("bootstrap_generation") != gen.name:
            # A fresh start (or a bootstrap of a generation that is gone): begin again.
            def reset(tx: Tx) -> None:
                tables.clear_kv(tx.conn)
                tables.clear_queues(tx.conn)
                tt.clear_logs(tx.conn)
                tx.conn.execute("delete from denokv_replica_snapshot_ranges")
                tt.set_state(tx.conn, bootstrap_generation=gen.name, bootstrapped="0")

            await self.engine.run(reset, name="replica reset")
        objects = await self.store.list(
            layout.generation_prefix(self.prefix, gen.name) + "snapshots/"
        )
        done = {
            row[0]
            for row in await self.engine.run(
                lambda tx: tx.conn.execute(
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
                snapshot = decode_snapshot_range(body, key)

                def store_one(tx: Tx) -> None:
                    store_range(tx.conn, snapshot)
                    tx.conn.execute(
                        "insert or replace into denokv_replica_snapshot_ranges values (?, 1)",
                        (key,),
                    )

                await self.engine.run(store_one, name="replica bootstrap range")

        await asyncio.gather(*(fetch(k) for k in todo))
        base = gen.base12

        def finish(tx: Tx) -> None:
            tx.set_version(stamps.version_of(gen.differential))
            tt.set_state(
                tx.conn,
                bootstrapped="1",
                generation=gen.name,
                cursor="",
                chain_tail=base.hex(),
                base_versionstamp12=base.hex(),
                current_versionstamp12=base.hex(),
            )
            tx.wake_all = True

        await self.engine.run(finish, name="replica bootstrap")
        self.stats.chain_problem = None
        log.info("bootstrap done at versionstamp %s", gen.differential.hex())

    # -- following ----------------------------------------------------------------------

    async def _fetch_logs(self, generation: str, apply: bool) -> None:
        state = await self._state()
        cursor = state.get("cursor") or None
        tail = bytes.fromhex(state.get("chain_tail") or state["base_versionstamp12"])
        chain = Chain(generation, tail, self._seen)
        logs = await self.store.list(
            layout.generation_prefix(self.prefix, generation) + "logs/", start_after=cursor
        )
        for obj in logs:
            name = layout.parse_log_name(obj.key)
            self.stats.newest_seen12 = max(self.stats.newest_seen12, name.last12)
            segment = decode_segment(await self.store.get(obj.key), obj.key)
            fresh = chain.accept(obj.key, segment.previous12, segment.entries)
            timed = [(e, _commit_time(e, segment.timestamp_ms)) for e in fresh]
            step = functools.partial(
                _apply_segment, key=obj.key, timed=timed, tail=chain.tail, apply=apply
            )
            moved = await self.engine.run(step, name="replica apply")
            self.stats.chain_problem = None
            if moved is not None:
                self.stats.segments_applied += 1
                self.stats.last_commit_ms = moved.last_commit_ms or self.stats.last_commit_ms
                self.stats.applied12 = moved.current12

    def _seen(self, after12: bytes, through12: bytes) -> set[bytes]:
        with self.engine.reader() as conn:
            return tt.known_between(conn, after12, through12)

    async def _switch_generation(self, newest: Generation, apply: bool) -> None:
        state = await self._state()
        following = state["generation"]
        point = newest.continues(following)
        tail = bytes.fromhex(state.get("chain_tail") or state["base_versionstamp12"])
        reached = max(tail, _current12(state))
        log_end = newest.lineage.continues_log_end if newest.lineage else None
        if (
            point is not None
            and self.stats.chain_problem is None
            and reached <= stamps.after(point)
            and (log_end is None or tail == log_end)
        ):
            # The new generation's snapshot is the old one's state at `point`, and we
            # hold everything up to there: go on with its logs.
            await self.engine.run(
                lambda tx: tt.set_state(
                    tx.conn, generation=newest.name, cursor="", chain_tail=newest.base12.hex()
                ),
                name="replica next generation",
            )
            log.info("following generation %s", newest.name)
            return
        why = (
            "it does not continue the generation followed"
            if point is None
            else ("the log followed does not lead to its snapshot")
        )
        log.info("generation %s: %s; loading its snapshot", newest.name, why)
        await self._replace_with_snapshot(newest)
        self.stats.rebootstraps += 1
        self.stats.chain_problem = None

    async def _replace_with_snapshot(self, gen: Generation) -> None:
        """Stage the generation's snapshot a range at a time, then swap it in at once."""
        await self.engine.run(lambda tx: staging.clear(tx.conn), name="replica staging")
        objects = await self.store.list(
            layout.generation_prefix(self.prefix, gen.name) + "snapshots/"
        )
        for obj in objects:
            snapshot = decode_snapshot_range(await self.store.get(obj.key), obj.key)
            stage = functools.partial(_stage, snapshot=snapshot)
            await self.engine.run(stage, name="replica staging")
        base = gen.base12

        def swap(tx: Tx) -> None:
            # One transaction: readers see the old state or the new one, never a mix.
            staging.swap_in(tx.conn)
            tt.clear_logs(tx.conn)
            tx.set_version(stamps.version_of(gen.differential))
            tt.set_state(
                tx.conn,
                generation=gen.name,
                cursor="",
                chain_tail=base.hex(),
                bootstrap_generation=gen.name,
                base_versionstamp12=base.hex(),
                current_versionstamp12=base.hex(),
            )
            tx.wake_all = True

        await self.engine.run(swap, name="replica snapshot swap")

    # -- plumbing -------------------------------------------------------------------------

    async def _state(self) -> dict[str, str]:
        return await self.engine.run(lambda tx: tt.get_state(tx.conn), name="replica state")

    # -- health (a `denokv.health.Component`) ------------------------------------------

    def metrics(self) -> Any:
        return self.stats.metrics()

    def problems(self) -> list[str]:
        if not self.stats.bootstrapped:
            return ["bootstrap from S3 not finished"]
        if self.stats.chain_problem is not None:
            return [f"the backup log cannot be followed: {self.stats.chain_problem}"]
        last = self.stats.last_poll
        if last is None or time.time() - last > self.stale_after_s:
            return [f"no successful poll of S3 in the last {self.stale_after_s:.0f} s"]
        return []

    def status(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "role": "replica",
            "bootstrapped": stats.bootstrapped,
            "generation": stats.generation,
            "applied_versionstamp": stamps.commit_of(stats.applied12).hex(),
            "lag_seconds": stats.lag_seconds(),
            "last_poll_ms": None if stats.last_poll is None else stats.last_poll * 1000,
            "segments_applied_total": stats.segments_applied,
            "errors": stats.errors,
            "chain_problem": stats.chain_problem,
            "snapshot_loads_total": stats.rebootstraps,
            **self.location,
            "recovery_points": recovery_points(self._listing),
        }


def _stage(tx: Tx, snapshot: SnapshotRange) -> None:
    staging.add(tx.conn, snapshot)


def _apply_segment(
    tx: Tx, key: str, timed: list[tuple[LogEntry, int]], tail: bytes, apply: bool
) -> tt.Moved | None:
    current = tt.current12(tx.conn)
    tt.add_redo(tx.conn, timed, current)
    tt.set_state(tx.conn, cursor=key, chain_tail=tail.hex())
    if not apply:
        return None
    moved = tt.checkout(tx.conn, tt.LATEST)
    if moved.current12 != current:
        tx.set_version(moved.version)
    tx.effects.touched += moved.touched
    return moved


def _successor(generations: list[Generation], following: str) -> Generation | None:
    """The generation whose snapshot continues `following`'s history, if one does."""
    return next((g for g in generations if g.continues(following) is not None), None)


def _current12(state: dict[str, str]) -> bytes:
    value = state.get("current_versionstamp12")
    return bytes.fromhex(value) if value else tt.ZERO12


def _commit_time(e: LogEntry, segment_time: int) -> int:
    return e.commit_time_ms if e.commit_time_ms is not None else segment_time
