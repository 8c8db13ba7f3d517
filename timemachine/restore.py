"""`pitr restore`: rebuild a plain Deno KV file from the object store, at any point.

Picks the generation that covers the point, loads its snapshot, replays its
log segments up to the last commit boundary at or before the point, and
writes the file atomically (a temporary file renamed into place), so the
target path never holds a half-written database.

Memory stays bounded whatever the size of the backup: objects are downloaded a
few at a time and written as they arrive, and log entries wait in a temporary
table (on disk) until they are replayed in versionstamp order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from denokv import redo_log, tables
from denokv import versionstamp as stamps
from denokv.effects import replay_queue_change
from denokv.redo_log import decode_queue_change, encode_queue_change
from timemachine import layout
from timemachine.chain import Chain, ChainError
from timemachine.codec import LogEntry, decode_segment, decode_snapshot_range
from timemachine.generations import RESTORED_FROM, Generation, GenerationError, list_generations
from timemachine.snapshot import store_range
from timemachine.store import ObjectNotFound, ObjectStore

DOWNLOAD_CONCURRENCY = 8  # objects in memory at once, at most
REPLAY_BATCH = 50_000  # log entries per commit while replaying
MAX12 = stamps.MAX12

STAGING = """
create temp table restore_log (
  versionstamp12 blob primary key,
  commit_time_ms integer,
  k blob not null,
  v blob,
  v_encoding integer not null,
  expiration_ms integer not null,
  queue blob
) without rowid
"""
STAGE_ENTRY = "insert or ignore into restore_log values (?, ?, ?, ?, ?, ?, ?)"
FIRST_BOUNDARY_AFTER_TIME = (
    "select min(versionstamp12) from restore_log "
    "where substr(versionstamp12, 11, 2) = x'ffff' and commit_time_ms > ?"
)
LAST_BOUNDARY_BEFORE = (
    "select versionstamp12, commit_time_ms from restore_log "
    "where substr(versionstamp12, 11, 2) = x'ffff' and versionstamp12 <= ? "
    "order by versionstamp12 desc limit 1"
)
STAGED_BETWEEN = (
    "select versionstamp12 from restore_log where versionstamp12 > ? and versionstamp12 <= ?"
)
ENTRIES_THROUGH = (
    "select versionstamp12, k, v, v_encoding, expiration_ms, queue from restore_log "
    "where versionstamp12 <= ? order by versionstamp12"
)


class RestoreError(Exception):
    pass


class NoBackup(RestoreError):
    """The bucket and prefix hold no complete generation at all."""


@dataclass(frozen=True, slots=True)
class Point:
    """Where to restore to: a versionstamp, a time, or (neither) the latest commit."""

    versionstamp: bytes | None = None  # 10 bytes
    time_ms: int | None = None

    def describe(self) -> str:
        if self.versionstamp is not None:
            return f"versionstamp {self.versionstamp.hex()}"
        if self.time_ms is not None:
            return f"time {format_time(self.time_ms)}"
        return "the latest commit"


@dataclass(frozen=True, slots=True)
class RestoreResult:
    generation: str
    versionstamp: bytes
    commit_time_ms: int | None
    keys: int
    log_entries: int


Progress = Callable[[str, int, int], None]


def choose_generation(generations: list[Generation], point: Point) -> Generation:
    if not generations:
        raise NoBackup("no backup found: the bucket and prefix hold no complete generation")
    if point.versionstamp is not None:
        fits = [g for g in generations if g.differential <= point.versionstamp]
    elif point.time_ms is not None:
        fits = [g for g in generations if g.started_ms <= point.time_ms]
    else:
        fits = generations
    if not fits:
        oldest = generations[0]
        raise RestoreError(
            f"{point.describe()} is before the oldest backup: generation {oldest.name} starts at "
            f"versionstamp {oldest.differential.hex()} ({format_time(oldest.started_ms)})"
        )
    return fits[-1]


async def restore(
    store: ObjectStore,
    prefix: str,
    point: Point,
    output: Path,
    progress: Progress | None = None,
) -> RestoreResult:
    try:
        generations = await list_generations(store, prefix)
    except GenerationError as exc:
        raise RestoreError(str(exc)) from None
    generation = choose_generation(generations, point)
    successor = next((g for g in generations if g.continues(generation.name) is not None), None)
    tmp = output.with_name(f".{output.name}.restoring-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal")):
        leftover.unlink(missing_ok=True)
    try:
        log_end = successor.lineage.continues_log_end if successor and successor.lineage else None
        result = await _build(store, prefix, generation, point, tmp, progress, log_end)
        os.replace(tmp, output)
        _fsync_dir(output.parent)
        return result
    finally:
        tmp.unlink(missing_ok=True)


async def _build(
    store: ObjectStore,
    prefix: str,
    gen: Generation,
    point: Point,
    path: Path,
    progress: Progress | None,
    log_end: bytes | None,
) -> RestoreResult:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("pragma journal_mode = wal")
        conn.execute("pragma synchronous = off")  # made durable once, at the end
        tables.migrate(conn)
        conn.execute(STAGING)
        await _load_snapshot(store, prefix, gen, conn, progress)
        await _load_logs(store, prefix, gen, point, conn, progress, log_end)
        applied, stamp, when = _replay(conn, gen, point)
        _remember_source(conn, gen.name, stamp)
        conn.execute("drop table temp.restore_log")
        conn.execute("pragma wal_checkpoint(truncate)")
        conn.execute("pragma journal_mode = delete")
        conn.execute("pragma synchronous = full")
        count = tables.count_kv(conn)
    finally:
        conn.close()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return RestoreResult(gen.name, stamp, when, count, applied)


async def _load_snapshot(
    store: ObjectStore, prefix: str, gen: Generation, conn: sqlite3.Connection,
    progress: Progress | None,
) -> None:  # fmt: skip
    """Write every snapshot range into the file, each in a transaction of its own."""
    objects = await store.list(layout.generation_prefix(prefix, gen.name) + "snapshots/")
    done = 0
    async for key, body in _download(store, [o.key for o in objects]):
        snapshot = decode_snapshot_range(body, key)
        with tables.transaction(conn):
            store_range(conn, snapshot)
        done += 1
        if progress:
            progress("snapshot", done, len(objects))


async def _load_logs(
    store: ObjectStore, prefix: str, gen: Generation, point: Point, conn: sqlite3.Connection,
    progress: Progress | None, log_end: bytes | None,
) -> None:  # fmt: skip
    """Stage every log entry after the snapshot, checking the segments form one history."""
    base = gen.base12
    limit = stamps.after(point.versionstamp) if point.versionstamp is not None else MAX12
    wanted = []
    for obj in await store.list(layout.generation_prefix(prefix, gen.name) + "logs/"):
        try:
            name = layout.parse_log_name(obj.key)
        except layout.LayoutError as exc:
            raise RestoreError(f"unexpected object {obj.key}: {exc}") from None
        if name.last12 <= base or name.first12 > limit:
            continue
        wanted.append((name, obj.key))
    wanted.sort()
    chain = Chain(gen.name, base, lambda lo, hi: _staged_between(conn, lo, hi))
    done = 0
    async for key, body in _download(store, [key for _, key in wanted]):
        segment = decode_segment(body, key)
        try:
            fresh = chain.accept(key, segment.previous12, segment.entries)
        except ChainError as exc:
            raise RestoreError(str(exc)) from None
        with tables.transaction(conn):
            conn.executemany(STAGE_ENTRY, (_staged(e, segment.timestamp_ms) for e in fresh))
        done += 1
        if progress:
            progress("logs", done, len(wanted))
    if log_end is not None and chain.tail < log_end and limit > chain.tail:
        raise RestoreError(
            f"generation {gen.name}: its log was closed at {log_end.hex()} but the segments "
            f"in the store end at {chain.tail.hex()}: some are missing"
        )


def _staged_between(conn: sqlite3.Connection, after12: bytes, through12: bytes) -> set[bytes]:
    rows = conn.execute(STAGED_BETWEEN, (after12, through12))
    return {row[0] for row in rows}


def _remember_source(conn: sqlite3.Connection, generation: str, stamp: bytes) -> None:
    """Tell a primary started on this file which history it continues."""
    redo_log.create_tables(conn)
    with tables.transaction(conn):
        redo_log.write_state(conn, {RESTORED_FROM: f"{generation} {stamp.hex()}"})


def _staged(e: LogEntry, segment_time: int) -> tuple[object, ...]:
    commit_time = e.commit_time_ms if e.commit_time_ms is not None else segment_time
    queue = None if e.queue is None else encode_queue_change(e.queue)
    return (e.versionstamp12, commit_time, e.key, e.value, e.encoding, e.expire_at_ms, queue)


def _replay(
    conn: sqlite3.Connection, gen: Generation, point: Point
) -> tuple[int, bytes, int | None]:
    """Apply whole commits up to the point; return (entries applied, versionstamp, time)."""
    limit = stamps.after(point.versionstamp) if point.versionstamp is not None else MAX12
    if point.time_ms is not None:
        (too_late,) = conn.execute(FIRST_BOUNDARY_AFTER_TIME, (point.time_ms,)).fetchone()
        if too_late is not None:
            limit = min(limit, stamps.start_of(too_late))
    found = conn.execute(LAST_BOUNDARY_BEFORE, (limit,)).fetchone()
    if found is None:  # nothing logged before the point: the snapshot is the state
        with tables.transaction(conn):
            tables.set_data_version(conn, stamps.version_of(gen.differential))
        return 0, gen.differential, None
    cut, when = found
    applied = 0
    rows = conn.execute(ENTRIES_THROUGH, (cut,))
    while batch := rows.fetchmany(REPLAY_BATCH):
        with tables.transaction(conn):
            for vs12, k, v, enc, exp, queue in batch:
                _apply(conn, vs12, k, v, enc, exp, queue)
        applied += len(batch)
    with tables.transaction(conn):
        tables.set_data_version(conn, stamps.version_of(cut))
    return applied, stamps.commit_of(cut), when


def _apply(
    conn: sqlite3.Connection,
    vs12: bytes,
    key: bytes,
    value: bytes | None,
    encoding: int,
    expire_at_ms: int,
    queue: bytes | None,
) -> None:
    if queue is not None:
        replay_queue_change(conn, decode_queue_change(queue))
    elif value is None:
        tables.delete(conn, key)
    else:
        version = stamps.version_of(vs12)
        tables.put_rows(conn, [tables.KvRow(key, value, encoding, version, 0, expire_at_ms)])


async def _download(store: ObjectStore, keys: list[str]) -> AsyncIterator[tuple[str, bytes]]:
    """Each object's body in key order, with at most DOWNLOAD_CONCURRENCY fetched ahead."""

    async def one(key: str) -> bytes:
        try:
            return await store.get(key)
        except ObjectNotFound:
            raise RestoreError(f"object {key} disappeared during the restore") from None

    pending: collections.deque[tuple[str, asyncio.Task[bytes]]] = collections.deque()
    try:
        for key in keys:
            pending.append((key, asyncio.create_task(one(key))))
            if len(pending) >= DOWNLOAD_CONCURRENCY:
                first, task = pending.popleft()
                yield first, await task
        while pending:
            first, task = pending.popleft()
            yield first, await task
    finally:
        for _, task in pending:
            task.cancel()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def format_time(ms: int) -> str:
    """A commit time in milliseconds as RFC 3339 UTC, for messages (`pitr` prints it too)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
