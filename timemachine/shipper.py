"""The shipper: runs beside the primary and moves the redo log to the object store.

Every sync interval (or sooner, when the backlog passes a size bound) it reads
the redo entries after the last shipped one, cuts them at the last complete
commit, uploads them as one segment (linked to the segment before it) and only
then trims them locally. A crash between upload and trim ships the same entries
again; readers skip repeats. While the store is unreachable the server keeps
taking writes, the backlog waits on disk, and the shipper retries with backoff.

It ships only while it holds the prefix's lease (`timemachine.lease`): a second
primary on the same prefix, or one that lost the lease, ships nothing, says why
in the log and `/readyz`, and keeps its backlog.

Generations (`timemachine.generations`): a generation is one unbroken history
of one primary. On start the shipper resumes its generation only if the file is
exactly its continuation (the log in the store ends where this file says it
shipped, or at a segment whose entries this file still holds); otherwise (an
older copy, a clone, commits made without capture, another primary's generation
since) it starts a new one. Rotation closes the old generation's log exactly at
the new snapshot's point before the new one is written, and records the new
generation locally before its differential appears, so a crash between the two
cannot leave acknowledged commits outside every generation.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from denokv import redo_log, tables
from denokv import versionstamp as stamps
from denokv.engine import Engine
from denokv.health import counters, gauges
from denokv.redo_log import RedoEntry, RedoLog
from denokv.writer import Tx
from timemachine import layout
from timemachine.codec import LogEntry, decode_segment, encode_segment
from timemachine.generations import (
    RESTORED_FROM,
    Generation,
    Lineage,
    Listing,
    lineage_key,
    list_all,
    recovery_points,
)
from timemachine.lease import DEFAULT_TTL_S, Lease
from timemachine.retention import doomed_generations
from timemachine.snapshot import read_snapshot
from timemachine.store import ObjectStore, ObjectStoreError

log = logging.getLogger("denokv.shipper")

ZERO12 = stamps.ZERO12
# Keys of `denokv_backup_state` the shipper keeps (beside the redo log's own).
GENERATION = "generation"
SHIPPED_THROUGH = "shipped_through"
PENDING = "pending_generation"  # being written; adopted after a crash if it completed
READ_PAGE = 200  # redo entries read per query while cutting a segment (<= 13 MB)


class LeaseNotHeld(Exception):
    """Another primary holds the prefix's lease (or ours could not be renewed)."""


@dataclass(frozen=True, slots=True)
class ShipperOptions:
    compression: str = "zstd"
    sync_interval_s: float = 1.0
    snapshot_interval_s: float = 24 * 3600
    retention_s: float = 7 * 24 * 3600
    max_segment_entries: int = 50_000
    max_segment_bytes: int = 8 * 1024 * 1024  # keys and values; a segment ends on the
    # first commit boundary past it (a commit is at most about 1 MB)
    max_backoff_s: float = 30.0
    ready_max_lag_s: float = 300.0  # /readyz fails while the oldest unshipped commit is older
    lease_ttl_s: float = DEFAULT_TTL_S


@dataclass
class ShipperStats:
    segments: int = 0
    entries: int = 0
    bytes: int = 0
    errors: int = 0
    generations: int = 0
    last_success: float | None = None
    last_error: str | None = None
    shipped_through: builtins.bytes = ZERO12  # `bytes` is the field above
    generation: str | None = None
    generation_started_ms: int | None = None
    retention_deleted: list[str] = field(default_factory=list)
    fenced: str | None = None  # who holds the lease when we do not


class Shipper:
    name = "shipper"

    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        prefix: str,
        options: ShipperOptions,
        *,
        location: dict[str, str | None] | None = None,
    ) -> None:
        if engine.writer is None or engine.redo is None:
            raise ValueError("backups need a writable database with redo capture on")
        self.engine = engine
        self.redo: RedoLog = engine.redo
        self.store = store
        self.prefix = prefix
        self.options = options
        self.stats = ShipperStats()
        self.owner = str(uuid.uuid4())
        self.lease = Lease(
            store,
            prefix,
            owner=self.owner,
            primary_id=self.redo.primary_id,
            ttl_s=options.lease_ttl_s,
        )
        self._reader = sqlite3.connect(engine.path, isolation_level=None, check_same_thread=False)
        self._known: dict[str, Generation] = {}
        self._listing: list[Generation] = []  # complete generations, as last listed
        self.location = location or {"prefix": prefix}  # where the backup lives, for people
        self._resumed = False
        self._origin = "first start"  # why the next generation starts, if it must
        self._retention_retry_at = 0.0  # monotonic; set after a failed retention pass

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
                self._failed(exc)
                delay = min(self.options.max_backoff_s, 0.5 * 2**attempt) * random.uniform(0.5, 1)
                attempt += 1
            await _sleep_until(stop, delay)
        # A last attempt so a clean shutdown leaves nothing behind, within bounds.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sync_once(), timeout=10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.lease.release(), timeout=5)

    def _failed(self, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        backlog = self.redo.backlog()
        age = redo_log.backlog_age_s(backlog)
        lag = "" if backlog.oldest_ms is None else f", oldest {age:.0f} s old"
        log.warning(
            "shipping failed (%s); %d entries waiting%s; retrying",
            self.stats.last_error, backlog.entries, lag,
        )  # fmt: skip

    async def sync_once(self) -> None:
        """Hold the lease, make sure a generation exists, ship, rotate and prune."""
        if not await self.lease.ensure():
            holder = self.lease.holder
            self.stats.fenced = holder.describe() if holder else "another primary"
            raise LeaseNotHeld(f"another primary holds the backup lease: {self.stats.fenced}")
        self.stats.fenced = None
        if not self._resumed:
            await self.resume()
            self._resumed = True
        if self.stats.generation is None or not await self._continuous():
            await self.start_generation(self._origin)
        await self.ship_pending()
        started = self.stats.generation_started_ms or 0
        if time.time() * 1000 - started >= self.options.snapshot_interval_s * 1000:
            await self.start_generation("rotation")
        await self._prune()
        self.stats.last_success = time.time()

    async def _prune(self) -> None:
        """Retention, unless it failed lately. A store that refuses deletes (a policy, a
        lock) is counted and logged, but does not hold up shipping: it waits a backoff."""
        if time.monotonic() < self._retention_retry_at:
            return
        try:
            await self.apply_retention()
        except ObjectStoreError as exc:
            self._retention_retry_at = time.monotonic() + self.options.max_backoff_s
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "retention failed (%s); those generations stay; retrying in %.0f s",
                self.stats.last_error, self.options.max_backoff_s,
            )  # fmt: skip

    def _require_lease(self) -> None:
        if not self.lease.held:
            raise LeaseNotHeld("the backup lease could not be renewed in time")

    # -- shipping ------------------------------------------------------------------

    async def ship_pending(self, through: bytes | None = None) -> int:
        """Upload every complete commit not yet shipped (up to `through`, if given).

        A pass ships what was there when it began: under a steady stream of
        writes it would otherwise never end, and rotation and retention, which
        run after it, would never get their turn.
        """
        if through is None:
            through = await asyncio.to_thread(redo_log.newest, self._reader)
            if through is None:
                return 0
        shipped = 0
        while True:
            entries = await asyncio.to_thread(self._read_complete_commits, through)
            if not entries:
                return shipped
            await self._upload_segment(entries)
            shipped += len(entries)

    def _read_complete_commits(self, through: bytes | None) -> list[RedoEntry]:
        """The next segment: whole commits after the last shipped one (up to `through`).

        Read a page at a time, and cut at the first commit boundary once the segment
        reached its entry or byte bound, so neither the shipper nor a reader of the
        segment ever holds more than about that (a backlog after an S3 outage
        becomes many segments, not one as big as the backlog).
        """
        options = self.options
        out: list[RedoEntry] = []
        cut = size = 0
        after = self.stats.shipped_through
        while True:
            page = redo_log.read_after(self._reader, after, READ_PAGE)
            wanted = [e for e in page if through is None or e.versionstamp12 <= through]
            for e in wanted:
                out.append(e)
                size += len(e.key) + len(e.value or b"")
                if e.is_boundary:
                    cut = len(out)
                    if cut >= options.max_segment_entries or size >= options.max_segment_bytes:
                        return out
            # Everything written in one transaction is visible at once, so a short
            # read ends on a boundary; what follows the last one is not committed yet.
            if len(page) < READ_PAGE or len(wanted) < len(page):
                return out[:cut]
            after = page[-1].versionstamp12

    async def _upload_segment(self, entries: list[RedoEntry]) -> None:
        self._require_lease()
        generation = self.stats.generation
        assert generation is not None
        first, last = entries[0].versionstamp12, entries[-1].versionstamp12
        name = layout.LogName(stamps.version_of(first), first, last)
        body = encode_segment(entries, self.options.compression, self.stats.shipped_through)
        # Written once: a repeat after a crash finds the same object already there.
        await self.store.put(layout.log_key(self.prefix, generation, name), body, if_absent=True)
        await self._record({SHIPPED_THROUGH: last.hex()}, trim_through=last)
        self.stats.shipped_through = last
        self.stats.segments += 1
        self.stats.entries += len(entries)
        self.stats.bytes += len(body)

    async def _record(
        self, state: dict[str, str], trim_through: bytes, covered: int | None = None
    ) -> None:
        """Store the backup state, then trim the shipped rows a bounded batch per commit."""

        def record(tx: Tx) -> None:
            redo_log.write_state(tx.conn, state)
            if covered is not None:
                # A new generation's snapshot holds whatever was committed uncaptured.
                self.redo.clear_uncaptured(tx.conn, covered)

        await self.engine.run(record, name="backup state")
        if trim_through > ZERO12:
            await self.engine.run_batches(
                lambda tx: self.redo.trim(tx.conn, trim_through), name="backup trim"
            )

    # -- resuming --------------------------------------------------------------------

    async def _continuous(self) -> bool:
        """Is the local file still the continuation of the generation we ship to?"""
        state, current = await asyncio.to_thread(self._state_and_version)
        if state.get(GENERATION) != self.stats.generation:
            self._origin = "not continuous"
            return False
        captured = int(state.get(redo_log.CAPTURED_VERSION, "0"))
        if state.get(redo_log.UNCAPTURED_AT) or current > captured:
            log.info("commits were made without redo capture; starting a new generation")
            self._origin = "not continuous"
            return False
        return True

    def _state_and_version(self) -> tuple[dict[str, str], int]:
        with tables.read_snapshot(self._reader) as conn:
            return redo_log.read_state(conn), tables.data_version(conn)

    async def resume(self) -> None:
        """Pick up the generation a previous run shipped to, if this file continues it."""
        state, _ = await asyncio.to_thread(self._state_and_version)
        listing = await list_all(self.store, self.prefix, self._known)
        await self._settle_pending(state, listing)
        state, _ = await asyncio.to_thread(self._state_and_version)
        name = state.get(GENERATION)
        if name is None:
            self._origin = "restored" if state.get(RESTORED_FROM) else "first start"
            return
        self._origin = "not continuous"
        ours = next((g for g in listing.complete if g.name == name), None)
        shipped = bytes.fromhex(state.get(SHIPPED_THROUGH, ZERO12.hex()))
        why = await self._why_not_resume(ours, listing, shipped)
        if why is not None:
            log.info("not resuming backup generation %s: %s; starting a new one", name, why)
            return
        assert ours is not None
        self.stats.generation = name
        self.stats.generation_started_ms = ours.started_ms

    async def _why_not_resume(
        self, ours: Generation | None, listing: Listing, shipped: bytes
    ) -> str | None:
        if ours is None:
            return "it is not in the store"
        if listing.complete[-1].name != ours.name:
            return f"the newest generation is {listing.complete[-1].name}"
        if ours.lineage is not None and ours.lineage.primary_id != self.redo.primary_id:
            return "another database file wrote it"
        tail, last_entry = await self._log_tail(ours)
        if tail == shipped:
            self.stats.shipped_through = shipped
            return None
        if tail > shipped and last_entry is not None and await self._holds(last_entry):
            # Uploaded but not trimmed before a crash: the same history, go on from there.
            await self._record({SHIPPED_THROUGH: tail.hex()}, trim_through=tail)
            self.stats.shipped_through = tail
            return None
        return f"its log ends at {tail.hex()}, this file shipped through {shipped.hex()}"

    async def _log_tail(self, gen: Generation) -> tuple[bytes, LogEntry | None]:
        """Where the generation's log ends in the store, and the last entry there."""
        objects = await self.store.list(layout.generation_prefix(self.prefix, gen.name) + "logs/")
        if not objects:
            return gen.base12, None
        newest = max(objects, key=lambda o: layout.parse_log_name(o.key).last12)
        segment = decode_segment(await self.store.get(newest.key), newest.key)
        last = segment.entries[-1]
        return last.versionstamp12, last

    async def _holds(self, entry: LogEntry) -> bool:
        """Does the local redo log hold exactly this entry (same stamp, key and value)?"""

        def look() -> bool:
            found = redo_log.read_after(self._reader, stamps.just_before(entry.versionstamp12), 1)
            if not found or found[0].versionstamp12 != entry.versionstamp12:
                return False
            if entry.queue is not None:
                return found[0].is_queue_change
            return found[0].key == entry.key and found[0].value == entry.value

        return await asyncio.to_thread(look)

    async def _settle_pending(self, state: dict[str, str], listing: Listing) -> None:
        """A generation recorded as being written: adopt it if it completed, else drop it."""
        pending = state.get(PENDING)
        if not pending:
            return
        done = next((g for g in listing.complete if g.name == pending), None)
        if done is not None:
            through = max(done.base12, bytes.fromhex(state.get(SHIPPED_THROUGH, ZERO12.hex())))
            await self._record(
                {GENERATION: pending, SHIPPED_THROUGH: through.hex(), PENDING: ""},
                trim_through=through,
                covered=stamps.version_of(done.differential),
            )
            log.info("adopted backup generation %s, completed before a restart", pending)
            return
        await self._delete_generation(pending)
        await self._record({PENDING: ""}, trim_through=ZERO12)

    # -- generations ----------------------------------------------------------------

    async def start_generation(self, origin: str = "rotation") -> str:
        self._require_lease()
        stamp, taken_ms, chunks = await read_snapshot(self.engine.path, self.options.compression)
        try:
            lineage = await self._close_old(stamp, taken_ms, origin)
            name = lineage.generation
            await self._record({PENDING: name}, trim_through=ZERO12)
            count = await self._upload_snapshot(name, stamp, chunks)
        finally:
            await chunks.aclose()
        await self.store.put(lineage_key(self.prefix, name), lineage.encode(), if_absent=True)
        # The differential marks the generation complete; readers ignore folders without it.
        self._require_lease()
        await self.store.put(
            layout.differential_key(self.prefix, name), stamp.hex().encode(), if_absent=True
        )
        through = max(stamps.after(stamp), self.stats.shipped_through)
        await self._record(
            {GENERATION: name, SHIPPED_THROUGH: through.hex(), PENDING: "", RESTORED_FROM: ""},
            trim_through=through,
            covered=stamps.version_of(stamp),
        )
        self.stats.generation = name
        self.stats.generation_started_ms = taken_ms
        self.stats.shipped_through = through
        self.stats.generations += 1
        self._origin = "rotation"
        log.info(
            "started backup generation %s at %s (%d keys; %s)", name, stamp.hex(), count, origin
        )
        return name

    async def _close_old(self, stamp: bytes, taken_ms: int, origin: str) -> Lineage:
        """The new generation's lineage; a rotation first ships the old log through `stamp`."""
        continues: tuple[str, bytes, bytes | None] | None = None
        old = self.stats.generation
        if origin == "rotation" and old is not None:
            # Must succeed: the old log is trimmed only once it reached the snapshot.
            await self.ship_pending(through=stamps.after(stamp))
            continues = (old, stamp, self.stats.shipped_through)
        elif origin == "restored":
            continues = await self._restored_point(stamp)
        return Lineage(
            generation=layout.new_generation(taken_ms),
            primary_id=self.redo.primary_id,
            owner=self.owner,
            host=socket.gethostname(),
            snapshot_versionstamp=stamp,
            snapshot_time_ms=taken_ms,
            continues_generation=continues[0] if continues else None,
            continues_versionstamp=continues[1] if continues else None,
            continues_log_end=continues[2] if continues else None,
            origin=origin,
            lease_epoch=self.lease.epoch,
        )

    async def _restored_point(self, stamp: bytes) -> tuple[str, bytes, None] | None:
        """A restored file continues its source, if nothing was committed since the restore."""
        state, _ = await asyncio.to_thread(self._state_and_version)
        source, _, point = state.get(RESTORED_FROM, "").partition(" ")
        if source and point and bytes.fromhex(point) == stamp:
            return source, stamp, None
        return None

    async def _upload_snapshot(self, name: str, stamp: bytes, chunks: Any) -> int:
        monoseq = stamps.version_of(stamp)
        count = 0
        async for chunk in chunks:
            self._require_lease()
            key = layout.snapshot_key(self.prefix, name, layout.SnapshotName(monoseq, chunk.seq))
            await self.store.put(key, chunk.body, if_absent=True)
            count += chunk.entries
        return count

    async def apply_retention(self) -> list[str]:
        """Delete generations no point in the window needs, and abandoned partial ones."""
        listing = await list_all(self.store, self.prefix, self._known)
        self._listing = listing.complete
        current = self.stats.generation
        doomed = doomed_generations(
            [g.name for g in listing.complete],
            time.time() * 1000,
            self.options.retention_s,
            current,
        )
        # A folder without a differential older than our generation was left by a crash.
        doomed += [n for n in listing.incomplete if current is not None and n < current]
        for name in doomed:
            self._require_lease()
            await self._delete_generation(name)
            self._known.pop(name, None)
            log.info("retention: deleted generation %s", name)
        self.stats.retention_deleted += doomed
        return doomed

    async def _delete_generation(self, name: str) -> None:
        keys = [o.key for o in await self.store.list(layout.generation_prefix(self.prefix, name))]
        differential = layout.differential_key(self.prefix, name)
        # Unmark the generation first, so a half-deleted one is never used.
        await self.store.delete([k for k in keys if k == differential])
        await self.store.delete([k for k in keys if k != differential])

    def close(self) -> None:
        self._reader.close()

    # -- health (a `denokv.health.Component`) ----------------------------------------

    def metrics(self) -> Iterator[Any]:
        stats = self.stats
        yield from counters(
            ("denokv_s3_segments_shipped", "Log segments uploaded", stats.segments),
            ("denokv_s3_bytes_shipped", "Bytes of log segments uploaded", stats.bytes),
            ("denokv_s3_errors", "Failed shipping attempts", stats.errors),
            ("denokv_s3_generations", "Backup generations started", stats.generations),
        )
        yield from gauges(
            (
                "denokv_backup_lease_held",
                "1 while this primary holds the prefix's backup lease",
                1 if self.lease.held else 0,
            )
        )
        if stats.last_success is not None:
            when = stats.last_success
            yield from gauges(
                ("denokv_s3_last_success_timestamp_seconds", "When shipping last succeeded", when)
            )

    def problems(self) -> list[str]:
        found = []
        if self.stats.fenced is not None:
            found.append(
                f"not shipping: another primary holds the backup lease ({self.stats.fenced})"
            )
        age = redo_log.backlog_age_s(self.redo.backlog())
        if age > self.options.ready_max_lag_s:
            found.append(f"backup is more than {self.options.ready_max_lag_s:.0f} s behind")
        return found

    def status(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "generation": stats.generation,
            "generation_started_ms": stats.generation_started_ms,
            "shipped_through": stats.shipped_through.hex(),
            "last_upload_ms": None if stats.last_success is None else stats.last_success * 1000,
            "segments_total": stats.segments,
            "bytes_total": stats.bytes,
            "errors": stats.errors,
            "last_error": stats.last_error,
            "lease_held": self.lease.held,
            "lease_holder": stats.fenced,
            **self.location,
            "recovery_points": self._recovery_points(),
        }

    def _recovery_points(self) -> list[dict[str, object]]:
        listed = [g for g in self._listing if g.name not in self.stats.retention_deleted]
        last = self.stats.last_success
        end = (
            None if last is None else int(last * 1000),
            stamps.commit_of(self.stats.shipped_through),
        )
        return recovery_points(listed, end)


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
