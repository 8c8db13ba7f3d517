"""Rotation never leaves acknowledged commits outside every generation.

In-process with the memory store, where a fault can be placed exactly: the old
generation's tail failing to upload, a crash between the new generation's
differential and the state record, and a commit landing while the snapshot
transaction starts.
"""

from __future__ import annotations

import sqlite3
import time
import types
from pathlib import Path
from typing import Any

import pytest

from denokv import tables
from denokv.engine import Engine
from denokv.operations import AtomicWrite, Mutation, MutationKind, ValueEncoding
from tests.support.dbfile import kv_rows
from tests.support.writes import put
from timemachine import snapshot as snapshot_module
from timemachine.generations import list_generations
from timemachine.memory_store import MemoryStore
from timemachine.restore import Point, restore
from timemachine.shipper import GENERATION, Shipper, ShipperOptions
from timemachine.store import ObjectStoreError

PREFIX = "p/"


def version_stamp(engine: Engine) -> bytes:
    return engine.current_versionstamp()


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    eng = Engine(tmp_path / "kv.sqlite", redo_log=True)
    yield eng
    eng.close()


async def test_a_failed_upload_of_the_old_tail_aborts_the_rotation(
    engine: Engine, tmp_path: Path
) -> None:
    store = MemoryStore("bkt")
    shipper = Shipper(engine, store, PREFIX, ShipperOptions())
    await shipper.sync_once()
    first = shipper.stats.generation
    for i in range(10):
        await engine.atomic_write(put(i))
    point = version_stamp(engine)  # inside the old generation's tail
    expected = kv_rows(tmp_path / "kv.sqlite")
    for i in range(10, 15):
        await engine.atomic_write(put(i))
    store.fail_next(1, "put")  # the old generation's last segment
    with pytest.raises(ObjectStoreError):
        await shipper.start_generation("rotation")
    assert shipper.stats.generation == first, "the rotation went on without the old tail"
    await shipper.sync_once()  # next pass: the tail, then (when due) the rotation
    await shipper.start_generation("rotation")
    assert shipper.stats.generation != first
    out = tmp_path / "at-point.sqlite"
    result = await restore(store, PREFIX, Point(versionstamp=point), out)
    assert result.generation == first
    assert kv_rows(out) == expected
    shipper.close()


async def test_a_crash_between_differential_and_state_adopts_the_new_generation(
    engine: Engine, tmp_path: Path
) -> None:
    store = MemoryStore("bkt")
    shipper = Shipper(engine, store, PREFIX, ShipperOptions())
    await shipper.sync_once()
    for i in range(5):
        await engine.atomic_write(put(i))
    real_record = shipper._record

    async def crash_at_the_end(state: dict[str, str], *args: Any, **kwargs: Any) -> None:
        if state.get(GENERATION):
            raise RuntimeError("killed after the differential, before the state")
        await real_record(state, *args, **kwargs)

    shipper._record = crash_at_the_end  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await shipper.start_generation("rotation")
    newest = (await list_generations(store, PREFIX))[-1]
    shipper.close()

    for i in range(5, 12):
        await engine.atomic_write(put(i))
    restarted = Shipper(engine, store, PREFIX, ShipperOptions())
    await restarted.sync_once()
    assert restarted.stats.generation == newest.name, "the completed generation was not adopted"
    out = tmp_path / "latest.sqlite"
    await restore(store, PREFIX, Point(), out)
    assert kv_rows(out) == kv_rows(tmp_path / "kv.sqlite")
    restarted.close()


async def test_a_generation_is_dated_by_its_snapshot_transaction(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore("bkt")
    shipper = Shipper(engine, store, PREFIX, ShipperOptions())
    await shipper.sync_once()
    committed: list[float] = []
    real = tables.data_version

    def slow_start(conn: sqlite3.Connection) -> int:
        # A commit lands after the rotation began but before the snapshot sees the file.
        if not committed:
            engine.atomic_write_sync(put(99))
            committed.append(time.time())
        return real(conn)

    # Only the snapshot's view of the tables module: the writer uses the real one.
    view = types.SimpleNamespace(**vars(tables))
    view.data_version = slow_start
    monkeypatch.setattr(snapshot_module, "tables", view)
    name = await shipper.start_generation("rotation")
    generation = next(g for g in await list_generations(store, PREFIX) if g.name == name)
    assert generation.started_ms >= int(committed[0] * 1000), (
        "the generation is dated before a commit its snapshot holds"
    )
    shipper.close()


async def test_backups_written_before_lineage_still_restore(engine: Engine, tmp_path: Path) -> None:
    """No lineage.json and no links between segments (the previous format)."""
    from denokv.proto import backup_pb2
    from timemachine.codec import compress, decompress

    store = MemoryStore("bkt")
    shipper = Shipper(engine, store, PREFIX, ShipperOptions())
    await shipper.sync_once()
    for i in range(3):
        for j in range(5):
            await engine.atomic_write(put(i * 10 + j))
        await shipper.ship_pending()  # a segment each
    expected = kv_rows(tmp_path / "kv.sqlite")
    shipper.close()
    logs = 0
    for key in list(store.keys()):
        if key.endswith("lineage.json"):
            await store.delete([key])
        elif "/logs/" in key:
            msg = backup_pb2.BackupMutationRange.FromString(decompress(await store.get(key), key))
            assert msg.previous_versionstamp, "our segments carry the link"
            msg.ClearField("previous_versionstamp")
            await store.put(key, compress(msg.SerializeToString(), "zstd"))
            logs += 1
    assert logs == 3
    out = tmp_path / "old-format.sqlite"
    await restore(store, PREFIX, Point(), out)
    assert kv_rows(out) == expected


async def test_shipped_rows_are_trimmed_a_bounded_batch_per_commit(engine: Engine) -> None:
    from denokv import redo_log

    store = MemoryStore("bkt")
    shipper = Shipper(engine, store, PREFIX, ShipperOptions())
    await shipper.sync_once()
    for start in range(0, 12_000, 1000):
        mutations = tuple(
            Mutation(b"\x02t%d\x00" % i, MutationKind.SET, b"v", ValueEncoding.BYTES)
            for i in range(start, start + 1000)
        )
        assert (await engine.atomic_write(AtomicWrite(mutations=mutations))).ok
    assert engine.redo is not None and engine.redo.backlog().entries == 12_000
    assert engine.writer is not None
    jobs = engine.writer.stats.jobs
    await shipper.ship_pending()
    assert engine.redo.backlog().entries == 0
    batches = engine.writer.stats.jobs - jobs - 1  # one job records the state
    assert batches >= 12_000 // redo_log.TRIM_BATCH, "the trim ran as one long commit"
    shipper.close()
