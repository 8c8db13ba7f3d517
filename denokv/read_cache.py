"""A cache of single-key reads in front of SQLite, kept right by the writer.

Why: a `kv.get` served from SQLite costs ~106k instructions in-process, and
one answered here ~81k (`bench/probes/app_instructions.py`). The difference is
Python's sqlite3 binding and SQLite itself, and each SQLite step gives up the
GIL, which the HTTP front's threads then take. A hit costs a dictionary lookup
and two counter reads.

What keeps it right is a table of write counters (`WriteCounters`). It lives
in shared memory, so every server process sees the same table. Each key maps
to one slot, by its CRC-32. Slot 0 stands for "every key": a restore, a
replica's snapshot or a bulk load changes all of them.

- **The writer** (one thread, in the main process) moves the slot of every key
  its transaction changed from even to odd before COMMIT. After COMMIT, or
  after a rollback, it moves the slot on to the next even value. Only then does
  it answer the writes (`denokv.writer`). So from the moment a write can be
  seen in the file until it is acknowledged, its slots differ from what they
  were before it began.
- **A reader** that misses reads the slots first, then SQLite. It stores the
  row together with the slot values it saw, but only if no write was in
  progress on those slots.
- **A hit** counts only if its slot and slot 0 still hold the stored values.
  So no write to that key (or to a key sharing its slot) can have begun since
  the row was read. The row is as current as the file.
- **A read of several keys** uses the cache only if every key hits. Each hit
  held from before the request until its own check, so all of them held at the
  first check: the answer is one snapshot, as a read from SQLite would be.
- **Expiry** is checked on every hit. A row is kept with its expiry time, and
  an expired row reads as absent, as in SQLite.

This relies on the design's rule that only the writer changes Deno's tables
in a live database. Another program that commits to the file anyway (tolerated,
not advised) is noticed within `OTHER_WRITERS_POLL_S`, and then every cached
row goes (`CacheKeeper.look_for_other_writers`). An engine with no writer of its
own and no shared counter table (a read-only open) has no cache.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from denokv.operations import ReadRange
from denokv.tables import LiveRow, TrackedConnection

OTHER_WRITERS_POLL_S = 0.1  # how soon another program's commit reaches the caches
SLOTS = 1 << 16  # 512 KiB of 8-byte counters; keys that share a slot only miss more
DEFAULT_MAX_BYTES = 32 << 20
# Python's own memory per entry beyond the key (held twice: the dictionary's and
# the row's) and the value: the dictionary slot, two tuples, the integers.
# Measured with tracemalloc: 433 bytes for an 18-byte key and a 40-byte value.
_ENTRY_OVERHEAD = 400
_MASK = SLOTS - 1


def slot_of(key: bytes) -> int:
    """The key's slot: 1 .. SLOTS-1 (slot 0 stands for every key)."""
    return (zlib.crc32(key) & _MASK) or 1


class WriteCounters:
    """The shared table of per-slot write counters.

    The main process creates it (`WriteCounters()`, a memfd) and hands `fd` to
    its worker processes, which map the same memory (`WriteCounters(fd)`). Only
    the writer thread changes it, through `begin` and `end`.
    """

    def __init__(self, fd: int | None = None) -> None:
        size = SLOTS * 8
        if fd is None and hasattr(os, "memfd_create"):
            fd = os.memfd_create("denokv-write-counters", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        # Without memfd (not Linux) the table is this process's alone (fd -1), and
        # worker processes get none, so they keep no cache.
        self.fd = fd if fd is not None else -1
        self._map = mmap.mmap(self.fd, size)
        self.values = memoryview(self._map).cast("Q")

    def slots(self, keys: Iterable[bytes], every_key: bool) -> set[int]:
        found = {slot_of(k) for k in keys}
        if every_key:
            found.add(0)
        return found

    def begin(self, slots: Iterable[int]) -> None:
        """Before COMMIT: these slots' keys are about to change (even -> odd)."""
        values = self.values
        for s in slots:
            values[s] += 1

    def end(self, slots: Iterable[int]) -> None:
        """After COMMIT or rollback, before any answer (odd -> even)."""
        values = self.values
        for s in slots:
            values[s] += 1

    def close(self) -> None:
        """Close the descriptor; the mapping stays until the last reader lets go of it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class CacheKeeper:
    """The writer's side: marks what its transaction changes before COMMIT and unmarks it
    after, and looks for other programs' commits. Runs on the writer thread only."""

    def __init__(self, counters: WriteCounters, conn_lock: threading.Lock) -> None:
        self.counters = counters
        self._lock = conn_lock  # the writer's: held around statements on its connection
        self._next_look = 0.0
        self._data_version: int | None = None

    def begin(self, conn: sqlite3.Connection) -> set[int]:
        """Just before COMMIT: the slots of what the transaction changed, now odd."""
        if type(conn) is not TrackedConnection:
            return set()
        changing = self.counters.slots(conn.changed_keys, conn.changed_all)
        self.counters.begin(changing)
        return changing

    def end(self, conn: sqlite3.Connection, changing: set[int]) -> None:
        """After COMMIT or rollback, before any answer: those slots even again."""
        self.counters.end(changing)
        if type(conn) is TrackedConnection:
            conn.changed_keys.clear()
            conn.changed_all = False

    def due(self) -> float:
        """Seconds until `look_for_other_writers` should run (0: now)."""
        return max(0.0, self._next_look - time.monotonic())

    def look_for_other_writers(self, conn: sqlite3.Connection) -> None:
        """Another program committing to the file (tolerated, not advised) changes keys
        the caches cannot know of. `data_version` on the writer's connection moves only
        for other connections' commits; when it moves, every cached row goes."""
        self._next_look = time.monotonic() + OTHER_WRITERS_POLL_S
        try:
            with self._lock:
                seen = conn.execute("pragma data_version").fetchone()[0]
        except sqlite3.Error:  # cannot tell (a storage fault): assume the worst
            seen = None
        before, self._data_version = self._data_version, seen
        if seen is None or (before is not None and seen != before):
            self.counters.begin({0})
            self.counters.end({0})


# A cached read: the row (None: no such key), its expiry (< 0: none), its slot,
# the slot's value and slot 0's value when it was read.
_Entry = tuple[LiveRow | None, int, int, int, int]
# Slot values seen before a read of SQLite: (slot, its value, slot 0's value).
Mark = tuple[int, int, int]


class ReadCache:
    """One process's cache of single-key reads (its engine's; see the module text)."""

    def __init__(self, counters: WriteCounters, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.counters = counters
        self.max_bytes = max_bytes
        self._entries: dict[bytes, _Entry] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def figures(self) -> list[int]:
        """[hits, misses, entries, bytes]: what `families` reports for this process. Only
        reads of single keys count as hits or misses."""
        return [self.hits, self.misses, len(self._entries), self._bytes]

    def lookup(self, ranges: Sequence[ReadRange], now: int) -> list[list[LiveRow]] | None:
        """The answer if every range reads one key and every key hits; None otherwise."""
        entries = self._entries
        values = self.counters.values
        every = values[0]
        out: list[list[LiveRow]] = []
        for r in ranges:
            start = r.start
            if r.end != start + b"\x00":  # not a single key: not the cache's to answer
                return None
            entry = entries.get(start)
            if entry is None:
                self.misses += 1
                return None
            row, expiry, slot, seen, seen_every = entry
            if values[slot] != seen or seen_every != every:
                self.misses += 1
                return None
            # `tables.is_live`, inlined: this is the hit path.
            out.append([] if row is None or 0 <= expiry <= now else [row])
        self.hits += 1
        return out

    def marks(self, ranges: Sequence[ReadRange]) -> list[Mark] | None:
        """Before reading SQLite: the slot values to store the rows with, if every range
        reads one key and no write is in progress on any of them; None otherwise."""
        values = self.counters.values
        every = values[0]
        if every & 1:
            return None
        found = []
        for r in ranges:
            start = r.start
            if r.end != start + b"\x00":
                return None
            slot = slot_of(start)
            seen = values[slot]
            if seen & 1:
                return None
            found.append((slot, seen, every))
        return found

    def store(self, key: bytes, row: LiveRow | None, expiry: int, mark: Mark) -> None:
        """Keep a row read from SQLite after `marks` gave `mark` for its key."""
        size = 2 * len(key) + (len(row[1]) if row is not None else 0) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        with self._lock:  # reader threads (--num-workers) may store at once
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _size(key, old)
            self._entries[key] = (row, expiry, *mark)
            self._bytes += size
            if self._bytes > self.max_bytes:
                self._shrink()

    def _shrink(self) -> None:
        """Drop the oldest entries until a quarter of the room is free."""
        entries = self._entries
        goal = self.max_bytes * 3 // 4
        while self._bytes > goal and entries:
            key = next(iter(entries))
            self._bytes -= _size(key, entries.pop(key))


def _size(key: bytes, entry: _Entry) -> int:
    row = entry[0]
    return 2 * len(key) + (len(row[1]) if row is not None else 0) + _ENTRY_OVERHEAD


def families(by_process: Mapping[str, Mapping[str, Any]]) -> Iterator[Any]:
    """The read caches of every server process (`figures` in each process's snapshot)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    hits = CounterMetricFamily(
        "denokv_read_cache_hits", "Reads answered from the read cache", labels=["process"]
    )
    misses = CounterMetricFamily(
        "denokv_read_cache_misses", "Reads the read cache could not answer", labels=["process"]
    )
    entries = GaugeMetricFamily(
        "denokv_read_cache_entries", "Keys held by the read cache", labels=["process"]
    )
    size = GaugeMetricFamily(
        "denokv_read_cache_bytes", "Memory the read cache counts as used", labels=["process"]
    )
    for process, snap in sorted(by_process.items()):
        found = snap.get("read_cache")
        if found is None:
            continue
        hits.add_metric([process], found[0])
        misses.add_metric([process], found[1])
        entries.add_metric([process], found[2])
        size.add_metric([process], found[3])
    yield from (hits, misses, entries, size)
