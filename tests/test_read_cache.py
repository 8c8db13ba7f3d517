"""The read cache: a cached row answers a read only while no write to its key began since.

Each test reads through `Engine.read`, the path every `kv.get` takes, and looks at
the cache's own counters to tell a hit from a read of the file.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from denokv import tables
from denokv.engine import Engine
from denokv.operations import (
    AtomicWrite,
    Check,
    Mutation,
    MutationKind,
    ReadRange,
    ValueEncoding,
    WriteStatus,
)
from denokv.read_cache import ReadCache, WriteCounters, slot_of
from denokv.writer import Tx, now_ms


def one(key: bytes) -> ReadRange:
    return ReadRange(key, key + b"\x00", 1)


def put(key: bytes, value: bytes, expire_at_ms: int = -1) -> AtomicWrite:
    return AtomicWrite(
        mutations=(Mutation(key, MutationKind.SET, value, ValueEncoding.BYTES, expire_at_ms),)
    )


def delete(key: bytes) -> AtomicWrite:
    return AtomicWrite(mutations=(Mutation(key, MutationKind.DELETE),))


def value(engine: Engine, key: bytes) -> bytes | None:
    rows = engine.read([one(key)])[0]
    return rows[0].value if rows else None


def cache_of(engine: Engine) -> ReadCache:
    assert engine.read_cache is not None
    return engine.read_cache


@pytest.fixture(params=["file", "memory"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "kv.sqlite" if request.param == "file" else ":memory:")
    yield eng
    eng.close()


def test_a_read_after_an_acknowledged_write_sees_it(engine: Engine) -> None:
    cache = cache_of(engine)
    engine.atomic_write_sync(put(b"k", b"one"))
    assert value(engine, b"k") == b"one"  # read from the file and kept
    hits = cache.hits
    assert value(engine, b"k") == b"one"
    assert cache.hits == hits + 1, "the second read was not answered from the cache"
    engine.atomic_write_sync(put(b"k", b"two"))
    assert value(engine, b"k") == b"two"
    assert value(engine, b"k") == b"two"
    engine.atomic_write_sync(delete(b"k"))
    assert value(engine, b"k") is None
    assert value(engine, b"k") is None


def test_a_key_that_does_not_exist_is_kept_as_absent_until_written(engine: Engine) -> None:
    cache = cache_of(engine)
    assert value(engine, b"nothing") is None
    hits = cache.hits
    assert value(engine, b"nothing") is None
    assert cache.hits == hits + 1
    engine.atomic_write_sync(put(b"nothing", b"now"))
    assert value(engine, b"nothing") == b"now"


def test_an_expired_row_reads_as_absent_from_the_cache(engine: Engine) -> None:
    cache = cache_of(engine)
    engine.atomic_write_sync(put(b"brief", b"v", expire_at_ms=now_ms() + 300))
    assert value(engine, b"brief") == b"v"
    assert value(engine, b"brief") == b"v"
    deadline = time.monotonic() + 10
    while value(engine, b"brief") is not None:
        assert time.monotonic() < deadline, "the row never expired"
        time.sleep(0.05)
    hits = cache.hits
    assert value(engine, b"brief") is None
    assert cache.hits == hits + 1, "the expired row was not answered from the cache"


def test_no_row_is_kept_while_a_write_to_its_key_is_in_progress(engine: Engine) -> None:
    cache, counters = cache_of(engine), engine.write_counters
    assert counters is not None
    engine.atomic_write_sync(put(b"busy", b"v"))
    counters.begin({slot_of(b"busy")})  # as the writer does before its COMMIT
    try:
        assert value(engine, b"busy") == b"v"
        assert value(engine, b"busy") == b"v"
        assert len(cache) == 0, "a row was kept while its slot was odd"
    finally:
        counters.end({slot_of(b"busy")})
    hits = cache.hits
    assert value(engine, b"busy") == b"v"
    assert value(engine, b"busy") == b"v"
    assert cache.hits == hits + 1


def test_a_write_that_began_after_the_row_was_read_makes_it_a_miss(engine: Engine) -> None:
    cache, counters = cache_of(engine), engine.write_counters
    assert counters is not None
    engine.atomic_write_sync(put(b"k", b"v"))
    assert value(engine, b"k") == b"v"
    counters.begin({slot_of(b"k")})
    try:
        misses = cache.misses
        assert value(engine, b"k") == b"v"
        assert cache.misses == misses + 1, "a row was used while a write to it was under way"
    finally:
        counters.end({slot_of(b"k")})


def test_the_writer_moves_every_changed_slot_on_by_two(engine: Engine) -> None:
    counters = engine.write_counters
    assert counters is not None
    keys = [b"a", b"b", b"c"]
    before = [counters.values[slot_of(k)] for k in keys]
    engine.atomic_write_sync(
        AtomicWrite(mutations=tuple(Mutation(k, MutationKind.SET, b"v") for k in keys))
    )
    after = [counters.values[slot_of(k)] for k in keys]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2, 2]
    assert counters.values[0] % 2 == 0


@pytest.mark.parametrize("bulk", ["clear_kv", "put_rows"])
def test_a_change_to_every_key_makes_every_row_a_miss(engine: Engine, bulk: str) -> None:
    for key in (b"x", b"y"):
        engine.atomic_write_sync(put(key, b"old"))
        assert value(engine, key) == b"old"

    def change_all(tx: Tx) -> None:
        if bulk == "clear_kv":
            tables.clear_kv(tx.conn)
        else:
            rows = [tables.KvRow(k, b"new", int(ValueEncoding.BYTES), 1) for k in (b"x", b"y")]
            tables.put_rows(tx.conn, rows)

    engine.run_sync(change_all)
    expected = None if bulk == "clear_kv" else b"new"
    assert value(engine, b"x") == expected
    assert value(engine, b"y") == expected


def test_a_failed_write_leaves_its_slots_even(engine: Engine) -> None:
    counters = engine.write_counters
    assert counters is not None

    def fail(tx: Tx) -> None:
        tables.upsert(tx.conn, b"k", b"v", 1, 1, -1)
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        engine.run_sync(fail)
    assert counters.values[slot_of(b"k")] % 2 == 0
    assert value(engine, b"k") is None


def test_a_read_of_several_keys_is_one_snapshot_while_transfers_run(tmp_path: Path) -> None:
    """Two accounts whose sum never changes; every read of both must see that sum."""
    engine = Engine(tmp_path / "kv.sqlite")
    cache = cache_of(engine)
    a, b = b"\x02acct\x00a\x00", b"\x02acct\x00b\x00"
    pack = struct.Struct("<q")
    engine.atomic_write_sync(
        AtomicWrite(
            mutations=(
                Mutation(a, MutationKind.SET, pack.pack(1000)),
                Mutation(b, MutationKind.SET, pack.pack(1000)),
            )
        )
    )
    stop = threading.Event()
    moved = [0]

    def transfers() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and moved[0] < 400 and time.monotonic() < deadline:
            ea, eb = engine.read([one(a), one(b)])
            (ra,), (rb,) = ea, eb
            amount = 1 + moved[0] % 7
            out = engine.atomic_write_sync(
                AtomicWrite(
                    checks=(Check(a, ra.versionstamp), Check(b, rb.versionstamp)),
                    mutations=(
                        Mutation(a, MutationKind.SET, pack.pack(pack.unpack(ra.value)[0] - amount)),
                        Mutation(b, MutationKind.SET, pack.pack(pack.unpack(rb.value)[0] + amount)),
                    ),
                )
            )
            if out.status is WriteStatus.SUCCESS:
                moved[0] += 1

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: interleave reads with commits
    worker = threading.Thread(target=transfers)
    worker.start()
    reads = 0
    try:
        deadline = time.monotonic() + 20
        while worker.is_alive() and time.monotonic() < deadline and reads < 200_000:
            (ra,), (rb,) = engine.read([one(a), one(b)])
            total = pack.unpack(ra.value)[0] + pack.unpack(rb.value)[0]
            assert total == 2000, f"read {total} after {moved[0]} transfers: not one snapshot"
            reads += 1
    finally:
        stop.set()
        worker.join(30)
        sys.setswitchinterval(old_interval)
        engine.close()
    assert moved[0] > 50, f"only {moved[0]} transfers ran beside {reads} reads"
    assert cache.hits > 100, f"only {cache.hits} of {reads} reads hit the cache"


def test_another_process_on_the_shared_counters_sees_every_write_at_once(
    tmp_path: Path,
) -> None:
    """A worker process's engine: its own cache, the main writer's counters."""
    path = tmp_path / "kv.sqlite"
    main = Engine(path)
    assert main.write_counters is not None
    other = Engine(path, writer=False, write_counters=WriteCounters(os.dup(main.write_counters.fd)))
    try:
        cache = cache_of(other)
        for n in range(20):
            main.atomic_write_sync(put(b"k", b"%d" % n))
            assert value(other, b"k") == b"%d" % n
            assert value(other, b"k") == b"%d" % n
        assert cache.hits >= 20
    finally:
        other.close()
        main.close()


def test_an_engine_that_cannot_know_every_write_has_no_cache(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    Engine(path).close()
    for options in ({"read_only": True}, {"writer": False}, {"read_cache_bytes": 0}):
        eng = Engine(path, **options)
        try:
            assert eng.read_cache is None, options
            assert value(eng, b"k") is None
        finally:
            eng.close()


def test_the_cache_stays_within_its_memory(tmp_path: Path) -> None:
    counters = WriteCounters()
    try:
        cache = ReadCache(counters, max_bytes=20_000)
        for n in range(1_000):
            key = b"key%d" % n
            cache.store(key, (key, bytes(100), 1, 1, 0), -1, (slot_of(key), 0, 0))
            assert cache.figures()[3] <= 20_000
        assert 0 < len(cache) < 1_000
        newest = b"key999"
        assert cache.lookup([one(newest)], now_ms()) == [[(newest, bytes(100), 1, 1, 0)]]
        assert cache.lookup([one(b"key0")], now_ms()) is None, "the oldest entry was kept"
    finally:
        counters.close()


def test_only_a_tracked_connection_notes_what_changed(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    plain = sqlite3.connect(db, isolation_level=None)
    tables.migrate(plain)
    plain.close()
    conn = sqlite3.connect(db, isolation_level=None, factory=tables.TrackedConnection)
    try:
        assert isinstance(conn, tables.TrackedConnection)
        tables.upsert(conn, b"a", b"v", 1, 1, -1)
        tables.delete(conn, b"b")
        tables.delete_many(conn, [b"c", b"d"])
        rows = [tables.KvRow(b"e", b"v", 1, 1), tables.KvRow(b"f", b"v", 1, 1)]
        tables.put_rows(conn, rows)
        assert conn.changed_keys == [b"a", b"b", b"c", b"d", b"e", b"f"]
        assert not conn.changed_all
        tables.clear_kv(conn)
        assert conn.changed_all
        conn.changed_keys.clear()
        conn.changed_all = False
        many = (tables.KvRow(b"m%d" % n, b"v", 1, 1) for n in range(tables.NOTED_KEYS + 1))
        tables.put_rows(conn, many)
        assert conn.changed_all, "a large load was not told as a change of every key"
        assert tables.count_kv(conn) == tables.NOTED_KEYS + 1
    finally:
        conn.close()


def test_a_commit_by_another_program_reaches_cached_reads_soon(tmp_path: Path) -> None:
    """Tolerated, not advised (docs/design.md): the writer notices it by `data_version`."""
    path = tmp_path / "kv.sqlite"
    engine = Engine(path)
    try:
        engine.atomic_write_sync(put(b"k", b"ours"))
        assert value(engine, b"k") == b"ours"
        assert value(engine, b"k") == b"ours"  # now in the cache
        other = sqlite3.connect(path, isolation_level=None)
        try:
            with tables.transaction(other):
                tables.upsert(other, b"k", b"theirs", int(ValueEncoding.BYTES), 10**9, -1)
        finally:
            other.close()
        deadline = time.monotonic() + 10
        while value(engine, b"k") != b"theirs":
            assert time.monotonic() < deadline, "another program's commit was never seen"
            time.sleep(0.02)
    finally:
        engine.close()


def test_a_read_of_a_range_is_not_the_caches_and_counts_neither_way(engine: Engine) -> None:
    cache = cache_of(engine)
    engine.atomic_write_sync(put(b"\x02p\x00a", b"1"))
    figures = cache.figures()
    rows = engine.read([ReadRange(b"\x02p\x00", b"\x02p\x01", 10)])[0]
    assert [r.value for r in rows] == [b"1"]
    assert cache.figures()[:3] == figures[:3], "a range read touched the cache"
