"""Log segments are bounded in bytes, so a backlog never becomes one huge object
(issue 10, item 10).

A segment used to be cut by entry count only (50,000): with values near 64 KB,
the backlog left by an S3 outage became one segment of gigabytes, which the
shipper built in memory and every restore and replica had to hold at once.
In-process on the memory store (tests/test_bounded_memory.py restores such a
backlog under a data-size limit through the real CLI).
"""

from __future__ import annotations

from pathlib import Path

from denokv.engine import Engine
from denokv.operations import AtomicWrite, Mutation, MutationKind, ValueEncoding
from tests.support.dbfile import kv_rows
from timemachine import layout
from timemachine.codec import decode_segment
from timemachine.memory_store import MemoryStore
from timemachine.restore import Point, restore
from timemachine.shipper import Shipper, ShipperOptions

PREFIX = "p/"
VALUE = 60_000
PER_COMMIT = 12  # 720 KB a commit, below the 819,200 bytes of one atomic write
COMMITS = 40  # 29 MB waiting, as after an S3 outage
BOUND = 8 * 1024 * 1024  # ShipperOptions.max_segment_bytes, the default


def commit(n: int) -> AtomicWrite:
    return AtomicWrite(
        mutations=tuple(
            Mutation(b"\x02k%d\x00" % (n * PER_COMMIT + j), MutationKind.SET,
                     bytes([n % 251]) * VALUE, ValueEncoding.BYTES)
            for j in range(PER_COMMIT)
        )
    )  # fmt: skip


async def test_a_backlog_ships_as_segments_within_the_byte_bound(tmp_path: Path) -> None:
    store = MemoryStore()
    engine = Engine(tmp_path / "kv.sqlite", redo_log=True)
    shipper = Shipper(engine, store, PREFIX, ShipperOptions())
    try:
        await shipper.sync_once()
        for n in range(COMMITS):
            await engine.atomic_write(commit(n))
        await shipper.sync_once()
        out = tmp_path / "restored.sqlite"
        await restore(store, PREFIX, Point(), out)
    finally:
        shipper.close()
        engine.close()
    logs = [k for k in store.keys() if "/logs/" in k]  # noqa: SIM118 (a method)
    assert len(logs) >= 3  # 29 MB in commits of 720 KB: 12 commits (8.6 MB) a segment
    for key in logs:
        segment = decode_segment(store.objects[key].body, key)
        data = sum(len(e.key) + len(e.value or b"") for e in segment.entries)
        # The bound, plus at most the one commit that crossed it.
        assert data < BOUND + PER_COMMIT * (VALUE + 16), (key, data)
        assert segment.entries[-1].is_boundary
        assert layout.parse_log_name(key).last12 == segment.entries[-1].versionstamp12
    assert kv_rows(out) == kv_rows(tmp_path / "kv.sqlite")
