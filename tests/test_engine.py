"""The storage engine on its own: group commit, isolation of failing writes, expiry."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from denokv.engine import Engine
from denokv.engine_errors import WriteError
from denokv.operations import (
    AtomicWrite,
    Check,
    Enqueue,
    Mutation,
    MutationKind,
    ReadRange,
    ValueEncoding,
    WriteResult,
    WriteStatus,
)
from denokv.versionstamp import from_version, version_of


def put(key: bytes, value: bytes = b"v", expire_at_ms: int = -1) -> AtomicWrite:
    return AtomicWrite(
        mutations=(Mutation(key, MutationKind.SET, value, ValueEncoding.BYTES, expire_at_ms),)
    )


def u64(key: bytes, kind: MutationKind, n: int) -> AtomicWrite:
    return AtomicWrite(
        mutations=(Mutation(key, kind, n.to_bytes(8, "little"), ValueEncoding.LE64),)
    )


@pytest.fixture(params=["file", "memory"])
def engine(request: pytest.FixtureRequest, tmp_path: Path):
    path = tmp_path / "kv.sqlite" if request.param == "file" else ":memory:"
    eng = Engine(path)
    yield eng
    eng.close()


async def test_concurrent_writes_share_commits_and_get_distinct_increasing_stamps(
    engine: Engine,
) -> None:
    results = await asyncio.gather(*(engine.atomic_write(put(b"k%d" % i)) for i in range(300)))
    stamps = [r.versionstamp for r in results]
    assert all(r.status is WriteStatus.SUCCESS for r in results)
    assert len(set(stamps)) == 300
    assert stamps == sorted(stamps), "stamps follow submission order within the queue"
    assert engine.writer is not None
    assert engine.writer.stats.writes == 300
    assert engine.writer.stats.commits < 300, "no group commit happened"
    gaps = [version_of(b) - version_of(a) for a, b in itertools.pairwise(stamps)]
    assert set(gaps) <= set(range(1, 10)) and len(set(gaps)) > 1


async def test_a_failing_write_in_a_group_rolls_back_alone(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "kv.sqlite", batch_timeout_ms=100)  # force one group
    try:
        await eng.atomic_write(put(b"text", b"not a number"))
        bad = AtomicWrite(
            mutations=(
                Mutation(b"partial", MutationKind.SET, b"x", ValueEncoding.BYTES),
                u64(b"text", MutationKind.SUM, 1).mutations[0],
            )
        )
        outcomes = await asyncio.gather(
            eng.atomic_write(put(b"before")),
            eng.atomic_write(bad),
            eng.atomic_write(put(b"after")),
            return_exceptions=True,
        )
        before, failed, after = outcomes
        assert isinstance(before, WriteResult) and isinstance(after, WriteResult)
        assert before.ok and after.ok
        assert isinstance(failed, WriteError)
        assert "non-U64 value in the database" in str(failed)
        assert eng.writer is not None
        assert eng.writer.stats.commits == 2  # the setup write, then one group of three
        got = eng.get_entries([b"before", b"partial", b"after"])
        assert [e is not None for e in got] == [True, False, True]
        # The failed write did not consume a version either.
        v1 = version_of(before.versionstamp)
        v3 = version_of(after.versionstamp)
        assert 1 <= v3 - v1 <= 9
    finally:
        eng.close()


async def test_checks_report_every_failed_index(engine: Engine) -> None:
    first = await engine.atomic_write(put(b"a"))
    write = AtomicWrite(
        checks=(
            Check(b"a", first.versionstamp),  # holds
            Check(b"a", None),  # fails: a exists
            Check(b"missing", None),  # holds
            Check(b"missing", first.versionstamp),  # fails
        ),
        mutations=put(b"a", b"changed").mutations,
    )
    result = await engine.atomic_write(write)
    assert result.status is WriteStatus.CHECK_FAILURE
    assert result.failed_checks == (1, 3)
    assert result.versionstamp == b""
    (entry,) = engine.get_entries([b"a"])
    assert entry is not None and entry.value == b"v"


async def test_u64_arithmetic(engine: Engine) -> None:
    await engine.atomic_write(u64(b"n", MutationKind.SUM, 2**64 - 1))
    await engine.atomic_write(u64(b"n", MutationKind.SUM, 3))
    await engine.atomic_write(u64(b"lo", MutationKind.MIN, 9))
    await engine.atomic_write(u64(b"lo", MutationKind.MIN, 4))
    await engine.atomic_write(u64(b"hi", MutationKind.MAX, 4))
    await engine.atomic_write(u64(b"hi", MutationKind.MAX, 9))
    entries = engine.get_entries([b"n", b"lo", b"hi"])
    got = [int.from_bytes(e.value, "little") if e is not None else None for e in entries]
    assert got == [2, 4, 9]


async def test_sum_clears_an_expiry(engine: Engine) -> None:
    far = int(time.time() * 1000) + 3_600_000
    await engine.atomic_write(
        AtomicWrite(
            mutations=(
                Mutation(
                    b"n", MutationKind.SET, (1).to_bytes(8, "little"), ValueEncoding.LE64, far
                ),
            )
        )
    )
    await engine.atomic_write(u64(b"n", MutationKind.SUM, 1))
    with engine.reader() as conn:
        assert conn.execute("select expiration_ms from kv where k = ?", (b"n",)).fetchone() == (-1,)


async def test_versionstamped_key_gets_the_commit_stamp_as_a_string_part(engine: Engine) -> None:
    write = AtomicWrite(
        mutations=(
            Mutation(
                b"\x02p\x00", MutationKind.SET_SUFFIX_VERSIONSTAMPED_KEY, b"x", ValueEncoding.BYTES
            ),
        )
    )
    result = await engine.atomic_write(write)
    rows = engine.read([ReadRange(b"\x02p\x00", b"\x02p\xff", 10)])[0]
    suffix = b"\x02" + result.versionstamp.hex().encode() + b"\x00"
    assert [r.key for r in rows] == [b"\x02p\x00" + suffix]


async def test_expired_keys_vanish_at_once_and_the_sweeper_deletes_them_promptly(
    tmp_path: Path,
) -> None:
    eng = Engine(tmp_path / "kv.sqlite")
    try:
        soon = int(time.time() * 1000) + 300
        await eng.atomic_write(put(b"e", expire_at_ms=soon))
        await eng.atomic_write(put(b"stay"))
        assert eng.get_entries([b"e"])[0] is not None
        version_before = eng.current_versionstamp()
        await asyncio.sleep(0.45)
        assert eng.get_entries([b"e"])[0] is None  # filtered before any sweep
        # Upstream would sweep only on its 60 s timer; ours re-arms for the nearer expiry.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with eng.reader() as conn:
                if conn.execute("select count(*) from kv where k = ?", (b"e",)).fetchone()[0] == 0:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the sweeper did not delete the expired key within 5 s")
        after = version_of(eng.current_versionstamp())
        assert after == version_of(version_before) + 1
    finally:
        eng.close()


async def test_enqueues_are_stored_with_the_default_schedule(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "kv.sqlite")
    try:
        write = AtomicWrite(enqueues=(Enqueue(b"payload", 123, (b"\x02dl\x00",)),))
        assert (await eng.atomic_write(write)).ok
    finally:
        eng.close()
    conn = sqlite3.connect(tmp_path / "kv.sqlite")
    rows = conn.execute(
        "select ts, data, backoff_schedule, keys_if_undelivered from queue"
    ).fetchall()
    assert rows == [(123, b"payload", "[100,1000,5000,30000,60000]", "[[2,100,108,0]]")]


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "kv.sqlite")
    assert eng.writer is not None
    writer = eng.writer
    futures = [writer.submit_sync(put(b"q%d" % i)) for i in range(200)]
    eng.close()
    assert all(f.result(timeout=5).ok for f in futures)
    conn = sqlite3.connect(tmp_path / "kv.sqlite")
    assert conn.execute("select count(*) from kv").fetchone()[0] == 200


async def test_read_only_engine_reports_writes_disabled(tmp_path: Path) -> None:
    Engine(tmp_path / "kv.sqlite").close()
    eng = Engine(tmp_path / "kv.sqlite", read_only=True)
    try:
        assert (await eng.atomic_write(put(b"x"))).status is WriteStatus.WRITE_DISABLED
        assert eng.read([ReadRange(b"", b"\xff", 10)]) == [[]]
    finally:
        eng.close()


async def test_reads_see_one_snapshot_across_ranges(engine: Engine) -> None:
    await engine.atomic_write(put(b"a", b"1"))
    await engine.atomic_write(put(b"b", b"1"))
    result = engine.read([ReadRange(b"a", b"a\x00", 1), ReadRange(b"b", b"b\x00", 1)])
    assert [r[0].value for r in result] == [b"1", b"1"]
    rev = engine.read([ReadRange(b"", b"\xff", 1, reverse=True)])
    assert rev[0][0].key == b"b"
    assert engine.read([ReadRange(b"b", b"a", 5)]) == [[]]


@pytest.mark.parametrize("where", ["file-3-readers", "memory"])
async def test_reads_give_rows_and_entries_alike_on_every_kind_of_reader(
    tmp_path: Path, where: str
) -> None:
    # Three readers: reads run on a thread pool; ":memory:": one shared connection.
    path = tmp_path / "kv.sqlite" if where.startswith("file") else ":memory:"
    eng = Engine(path, readers=3 if where.startswith("file") else 1)
    try:
        for i in range(20):
            await eng.atomic_write(put(b"k%02d" % i, b"v%d" % i))
        ranges = [ReadRange(b"k05", b"k08", 10), ReadRange(b"", b"\xff", 2, reverse=True)]
        rows, entries = await asyncio.gather(
            eng.snapshot_read_rows(ranges), eng.snapshot_read(ranges)
        )
        assert [[r[0] for r in found] for found in rows] == [
            [b"k05", b"k06", b"k07"],
            [b"k19", b"k18"],
        ]
        assert [[(e.key, e.value, e.versionstamp) for e in found] for found in entries] == [
            [(k, v, from_version(ver, seq)) for k, v, _, ver, seq in found] for found in rows
        ]
        many = await asyncio.gather(*(eng.snapshot_read_rows(ranges[:1]) for _ in range(50)))
        assert all(found == rows[:1] for found in many)
    finally:
        eng.close()


def test_a_memory_engine_reads_on_the_callers_thread_whatever_readers_asks() -> None:
    # It has one connection behind a lock: a pool of reader threads would only add hops.
    with Engine(":memory:", readers=4) as engine:
        assert engine.reads_inline
