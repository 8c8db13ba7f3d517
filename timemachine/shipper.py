"""The shipper: runs beside the primary and moves the redo log to the object store.

Every sync interval (or sooner, when the backlog passes a size bound) it reads
the redo entries after the last shipped one, cuts them at the last complete
commit, uploads them as one segment and only then trims them locally. A crash
between upload and trim ships the same entries again; readers ignore repeats
by versionstamp. While the store is unreachable the server keeps taking
writes, the backlog waits on disk, and the shipper retries with backoff.

Generations: a new one (a fresh snapshot) starts on first run, when the local
file is not continuous with what was shipped (restored, replaced, or written
without capture), and every snapshot interval. Retention deletes generations
that no point inside the retention window needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from denokv import redo_log, tables
from denokv.engine import Engine
from denokv.redo_log import BOUNDARY, RedoEntry, RedoLog
from denokv.writer import Tx
from timemachine import layout
from timemachine.codec import encode_segment
from timemachine.retention import doomed_generations
from timemachine.snapshot import read_snapshot
from timemachine.store import ObjectNotFound, ObjectStore

log = logging.getLogger("denokv.shipper")

ZERO12 = bytes(12)


@dataclass(frozen=True, slots=True)
class ShipperOptions:
    compression: str = "zstd"
    sync_interval_s: float = 1.0
    snapshot_interval_s: float = 24 * 3600
    retention_s: float = 7 * 24 * 3600
    max_segment_entries: int = 50_000
    max_backoff_s: float = 30.0
    ready_max_lag_s: float = 300.0  # /readyz fails while the oldest unshipped commit is older


@dataclass
class ShipperStats:
    segments: int = 0
    entries: int = 0
    bytes: int = 0
    errors: int = 0
    generations: int = 0
    last_success: float | None = None
    last_error: str | None = None
    shipped_through: bytes = ZERO12
    generation: str | None = None
    retention_deleted: list[str] = field(default_factory=list)


class Shipper:
    def __init__(
        self, engine: Engine, store: ObjectStore, prefix: str, options: ShipperOptions
    ) -> None:
        if engine.writer is None or engine.redo is None:
            raise ValueError("backups need a writable database with redo capture on")
        self.engine = engine
        self.redo: RedoLog = engine.redo
        self.store = store
        self.prefix = prefix
        self.options = options
        self.stats = ShipperStats()
        self._reader = sqlite3.connect(engine.path, isolation_level=None, check_same_thread=False)
        self._generation_started_ms = 0
        self._resumed = False

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.sync_once()
                attempt = 0
                # The interval is from pass to pass, so a commit waits at most one of them.
                delay = max(0.0, self.options.sync_interval_s - (time.monotonic() - started))
            except Exception as exc:
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                backlog = self.redo.backlog()
                lag = (
                    ""
                    if backlog.oldest_ms is None
                    else (f", oldest {redo_log.backlog_age_s(backlog):.0f} s old")
                )
                log.warning(
                    "shipping failed (%s); %d entries waiting%s; retrying",
                    self.stats.last_error, backlog.entries, lag,
                )  # fmt: skip
                delay = min(self.options.max_backoff_s, 0.5 * 2**attempt) * random.uniform(0.5, 1)
                attempt += 1
            await _sleep_until(stop, delay)
        # A last attempt so a clean shutdown leaves nothing behind, within bounds.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sync_once(), timeout=10)

    async def sync_once(self) -> None:
        """Make sure a generation exists, ship everything pending, rotate and prune."""
        if not self._resumed:
            await self.resume()
            self._resumed = True
        if self.stats.generation is None or not await self._continuous():
            await self.start_generation()
        await self.ship_pending()
        age_ms = time.time() * 1000 - self._generation_started_ms
        if age_ms >= self.options.snapshot_interval_s * 1000:
            await self.start_generation()
        await self.apply_retention()
        self.stats.last_success = time.time()

    # -- shipping ------------------------------------------------------------------

    async def ship_pending(self, through: bytes | None = None) -> int:
        """Upload every complete commit not yet shipped (up to `through`, if given).

        A pass ships what was there when it began: under a steady stream of
        writes it would otherwise never end, and rotation and retention, which
        run after it, would never get their turn.
        """
        if through is None:
            through = await asyncio.to_thread(self._newest_captured)
            if through is None:
                return 0
        shipped = 0
        while True:
            entries = await asyncio.to_thread(self._read_complete_commits, through)
            if not entries:
                return shipped
            await self._upload_segment(entries)
            shipped += len(entries)

    def _newest_captured(self) -> bytes | None:
        return redo_log.newest(self._reader)

    def _read_complete_commits(self, through: bytes | None) -> list[RedoEntry]:
        limit = self.options.max_segment_entries
        while True:
            entries = redo_log.read_after(self._reader, self.stats.shipped_through, limit)
            if through is not None:
                entries = [e for e in entries if e.versionstamp12 <= through]
            cut = len(entries)
            while cut and not entries[cut - 1].is_boundary:
                cut -= 1
            if cut or len(entries) < limit:
                # Everything written in one transaction is visible at once, so a
                # short read without a boundary is empty; a full one is a huge commit.
                return entries[:cut]
            limit *= 2

    async def _upload_segment(self, entries: list[RedoEntry]) -> None:
        generation = self.stats.generation
        assert generation is not None
        first, last = entries[0].versionstamp12, entries[-1].versionstamp12
        name = layout.LogName(int.from_bytes(first[:8], "big"), first, last)
        body = encode_segment(entries, self.options.compression)
        # Written once: a repeat after a crash finds the same object already there.
        await self.store.put(layout.log_key(self.prefix, generation, name), body, if_absent=True)
        await self._record(shipped_through=last)
        self.stats.segments += 1
        self.stats.entries += len(entries)
        self.stats.bytes += len(body)

    async def _record(
        self, shipped_through: bytes, generation: str | None = None, covered: bytes | None = None
    ) -> None:
        state = {"shipped_through": shipped_through.hex()}
        if generation is not None:
            state["generation"] = generation
            state["generation_started_ms"] = str(self._generation_started_ms)
        covered_version = None if covered is None else int.from_bytes(covered[:8], "big")

        def trim(tx: Tx) -> None:
            self.redo.trim(tx.conn, shipped_through, state)
            if covered_version is not None:
                # The new generation's snapshot holds whatever was committed uncaptured.
                self.redo.clear_uncaptured(tx.conn, covered_version)

        await self.engine.run(trim, name="backup trim")
        self.stats.shipped_through = shipped_through
        if generation is not None:
            self.stats.generation = generation

    # -- generations ----------------------------------------------------------------

    async def _continuous(self) -> bool:
        """Is the local file still the continuation of the generation we ship to?"""
        state, current = await asyncio.to_thread(self._state_and_version)
        if state.get("generation") != self.stats.generation:
            return False
        captured = int(state.get(redo_log.CAPTURED_VERSION, "0"))
        if state.get(redo_log.UNCAPTURED_AT) or current > captured:
            log.info("commits were made without redo capture; starting a new generation")
            return False
        return True

    def _state_and_version(self) -> tuple[dict[str, str], int]:
        with tables.read_snapshot(self._reader) as conn:
            return redo_log.read_state(conn), tables.data_version(conn)

    async def resume(self) -> None:
        """Pick up the generation a previous run was shipping to, if S3 still has it."""
        state = await asyncio.to_thread(redo_log.read_state, self._reader)
        generation = state.get("generation")
        if generation is None:
            return
        try:
            await self.store.get(layout.differential_key(self.prefix, generation))
        except ObjectNotFound:
            log.info("generation %s is not in the store; starting a new one", generation)
            return
        self.stats.generation = generation
        self.stats.shipped_through = bytes.fromhex(state.get("shipped_through", ZERO12.hex()))
        self._generation_started_ms = int(state.get("generation_started_ms", "0"))

    async def start_generation(self) -> str:
        now_ms = int(time.time() * 1000)
        stamp, chunks = await read_snapshot(self.engine.path, self.options.compression, now_ms)
        if self.stats.generation is not None:
            # Close the old generation at exactly the new snapshot's point, so a
            # replica following it can step over to the new one without a gap.
            with contextlib.suppress(Exception):
                await self.ship_pending(through=stamp + BOUNDARY)
        generation = layout.new_generation(now_ms)
        monoseq = int.from_bytes(stamp[:8], "big")
        count = 0
        async for chunk in chunks:
            name = layout.SnapshotName(monoseq, chunk.seq)
            key = layout.snapshot_key(self.prefix, generation, name)
            await self.store.put(key, chunk.body, if_absent=True)
            count += chunk.entries
        # The differential marks the generation complete; readers ignore folders without it.
        await self.store.put(
            layout.differential_key(self.prefix, generation), stamp.hex().encode(), if_absent=True
        )
        self._generation_started_ms = now_ms
        through = max(stamp + BOUNDARY, self.stats.shipped_through)
        await self._record(shipped_through=through, generation=generation, covered=stamp)
        self.stats.generations += 1
        log.info("started backup generation %s at %s (%d keys)", generation, stamp.hex(), count)
        return generation

    async def apply_retention(self) -> list[str]:
        folders = await self.store.list_folders(layout.generations_prefix(self.prefix))
        doomed = doomed_generations(
            [f.rstrip("/") for f in folders],
            time.time() * 1000,
            self.options.retention_s,
            self.stats.generation,
        )
        for name in doomed:
            prefix = layout.generation_prefix(self.prefix, name)
            objects = await self.store.list(prefix)
            keys = [o.key for o in objects]
            differential = layout.differential_key(self.prefix, name)
            # Unmark the generation first, so a half-deleted one is never used.
            await self.store.delete([k for k in keys if k == differential])
            await self.store.delete([k for k in keys if k != differential])
            log.info("retention: deleted generation %s", name)
        self.stats.retention_deleted += doomed
        return doomed

    def close(self) -> None:
        self._reader.close()

    # -- health (a `denokv.health.Component`) ----------------------------------------

    name = "shipper"

    def metrics(self) -> Iterator[Any]:
        stats = self.stats
        yield CounterMetricFamily(
            "denokv_s3_segments_shipped", "Log segments uploaded", value=stats.segments
        )
        yield CounterMetricFamily(
            "denokv_s3_bytes_shipped", "Bytes of log segments uploaded", value=stats.bytes
        )
        yield CounterMetricFamily(
            "denokv_s3_errors", "Failed shipping attempts", value=stats.errors
        )
        yield CounterMetricFamily(
            "denokv_s3_generations", "Backup generations started", value=stats.generations
        )
        if stats.last_success is not None:
            yield GaugeMetricFamily(
                "denokv_s3_last_success_timestamp_seconds",
                "When shipping last succeeded",
                value=stats.last_success,
            )

    def problems(self) -> list[str]:
        age = redo_log.backlog_age_s(self.redo.backlog())
        if age > self.options.ready_max_lag_s:
            return [f"backup is more than {self.options.ready_max_lag_s:.0f} s behind"]
        return []

    def status(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "generation": stats.generation,
            "generation_started_ms": self._generation_started_ms or None,
            "shipped_through": stats.shipped_through.hex(),
            "last_upload_ms": None if stats.last_success is None else stats.last_success * 1000,
            "segments_total": stats.segments,
            "bytes_total": stats.bytes,
            "errors": stats.errors,
            "last_error": stats.last_error,
        }


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
