"""`pitr restore`: rebuild a plain Deno KV file from the object store, at any point.

Picks the generation that covers the point, loads its snapshot, replays its
log segments up to the last commit boundary at or before the point, and
writes the file atomically (a temporary file renamed into place), so the
target path never holds a half-written database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from denokv.redo_log import BOUNDARY
from denokv.schema import migrate
from timemachine import layout
from timemachine.codec import LogEntry, decode_segment, decode_snapshot
from timemachine.snapshot import insert_entries
from timemachine.store import ObjectNotFound, ObjectStore

DOWNLOAD_CONCURRENCY = 16
MAX12 = b"\xff" * 12


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
class Generation:
    name: str
    differential: bytes  # the snapshot's 10-byte versionstamp
    started_ms: int


@dataclass(frozen=True, slots=True)
class RestoreResult:
    generation: str
    versionstamp: bytes
    commit_time_ms: int | None
    keys: int
    log_entries: int


Progress = Callable[[str, int, int], None]


async def list_generations(
    store: ObjectStore, prefix: str, known: dict[str, Generation] | None = None
) -> list[Generation]:
    """Complete generations (those with a differential), oldest first.

    `known` caches generations already read: a poller then pays one LIST per
    call, plus one GET per generation it has not seen complete before.
    """
    out = []
    for folder in await store.list_folders(layout.generations_prefix(prefix)):
        name = folder.rstrip("/")
        if known is not None and name in known:
            out.append(known[name])
            continue
        try:
            started = layout.generation_time_ms(name)
            body = await store.get(layout.differential_key(prefix, name))
        except (layout.LayoutError, ObjectNotFound):
            continue
        text = body.decode(errors="replace").strip()
        if len(text) != 20:
            raise RestoreError(f"generation {name}: differential {text!r} is not 20 hex characters")
        generation = Generation(name, bytes.fromhex(text), started)
        if known is not None:
            known[name] = generation
        out.append(generation)
    return out


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
    generation = choose_generation(await list_generations(store, prefix), point)
    tmp = output.with_name(f".{output.name}.restoring-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal")):
        leftover.unlink(missing_ok=True)
    try:
        result = await _build(store, prefix, generation, point, tmp, progress)
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
) -> RestoreResult:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("pragma journal_mode = wal")
        conn.execute("pragma synchronous = off")  # made durable once, at the end
        migrate(conn)
        conn.execute("begin")
        await _load_snapshot(store, prefix, gen, conn, progress)
        entries = await _load_logs(store, prefix, gen, point, progress)
        applied, stamp, when = _replay(conn, gen, point, entries)
        version = int.from_bytes(stamp[:8], "big")
        conn.execute("update data_version set version = ? where k = 0", (version,))
        conn.execute("commit")
        conn.execute("pragma wal_checkpoint(truncate)")
        conn.execute("pragma journal_mode = delete")
        conn.execute("pragma synchronous = full")
        (count,) = conn.execute("select count(*) from kv").fetchone()
    finally:
        conn.close()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return RestoreResult(gen.name, stamp, when, count, applied)


async def _load_snapshot(
    store: ObjectStore, prefix: str, gen: Generation, conn: sqlite3.Connection,
    progress: Progress | None,
) -> int:  # fmt: skip
    objects = await store.list(layout.generation_prefix(prefix, gen.name) + "snapshots/")
    total = 0
    downloaded = _in_order(await _download(store, [o.key for o in objects]))
    for done, (body, name) in enumerate(downloaded, 1):
        rows = decode_snapshot(body, name)
        insert_entries(conn, rows)
        total += len(rows)
        if progress:
            progress("snapshot", done, len(objects))
    return total


async def _load_logs(
    store: ObjectStore, prefix: str, gen: Generation, point: Point, progress: Progress | None
) -> dict[bytes, tuple[LogEntry, int]]:
    """Every log entry after the snapshot, keyed by versionstamp12 (repeats collapse)."""
    base = gen.differential + BOUNDARY
    limit = point.versionstamp + BOUNDARY if point.versionstamp is not None else MAX12
    wanted = []
    for obj in await store.list(layout.generation_prefix(prefix, gen.name) + "logs/"):
        try:
            name = layout.parse_log_name(obj.key)
        except layout.LayoutError as exc:
            raise RestoreError(f"unexpected object {obj.key}: {exc}") from None
        if name.last12 <= base or name.first12 > limit:
            continue
        wanted.append(obj.key)
    entries: dict[bytes, tuple[LogEntry, int]] = {}
    for done, (body, key) in enumerate(_in_order(await _download(store, wanted)), 1):
        segment_time, rows = decode_segment(body, key)
        for e in rows:
            if e.versionstamp12 > base:
                entries.setdefault(e.versionstamp12, (e, segment_time))
        if progress:
            progress("logs", done, len(wanted))
    return entries


def _replay(
    conn: sqlite3.Connection,
    gen: Generation,
    point: Point,
    entries: dict[bytes, tuple[LogEntry, int]],
) -> tuple[int, bytes, int | None]:
    """Apply whole commits up to the point; return (entries applied, versionstamp, time)."""
    ordered = [entries[k] for k in sorted(entries)]
    cut = 0  # entries before this index form complete commits within the point
    stamp, when = gen.differential, None
    for i, (e, segment_time) in enumerate(ordered):
        if not e.versionstamp12.endswith(BOUNDARY):
            continue
        commit_time = e.commit_time_ms if e.commit_time_ms is not None else segment_time
        if point.versionstamp is not None and e.versionstamp12[:10] > point.versionstamp:
            break
        if point.time_ms is not None and commit_time > point.time_ms:
            break
        cut, stamp, when = i + 1, e.versionstamp12[:10], commit_time
    for e, _ in ordered[:cut]:
        version = int.from_bytes(e.versionstamp12[:8], "big")
        if e.value is None:
            conn.execute("delete from kv where k = ?", (e.key,))
        else:
            conn.execute(
                "insert or replace into kv (k, v, v_encoding, version, seq, expiration_ms) "
                "values (?, ?, ?, ?, 0, ?)",
                (e.key, e.value, e.encoding, version, e.expire_at_ms),
            )
    return cut, stamp, when


async def _download(store: ObjectStore, keys: list[str]) -> list[tuple[bytes, str]]:
    slots = asyncio.Semaphore(DOWNLOAD_CONCURRENCY)

    async def one(key: str) -> tuple[bytes, str]:
        async with slots:
            try:
                return await store.get(key), key
            except ObjectNotFound:
                raise RestoreError(f"object {key} disappeared during the restore") from None

    return list(await asyncio.gather(*(one(k) for k in keys)))


def _in_order(items: list[tuple[bytes, str]]) -> list[tuple[bytes, str]]:
    return sorted(items, key=lambda item: item[1])


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def format_time(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def terminal_progress(stage: str, done: int, total: int) -> None:
    if not sys.stderr.isatty() or total == 0:
        return
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r{stage:<9}[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
