"""A DeleteObjects answer with per-key errors, in-process on the memory store (issue 10,
item 8).

The store refuses one key of a generation retention wants gone. The shipper
must count and log the failure, must not report the generation deleted, and
must keep shipping at its sync interval meanwhile: a bucket that refuses
deletes (a policy, a retention lock) must not make acknowledged commits wait
for the backup longer than usual.

(tests/test_retention_safety.py proves the same against real server processes
and moto; this module needs `timemachine.memory_store`, which the code before
issue 10 did not have.)
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from denokv.engine import Engine
from tests.support.writes import put
from timemachine import layout
from timemachine import shipper as shipper_module
from timemachine.generations import list_generations
from timemachine.memory_store import MemoryStore
from timemachine.shipper import Shipper, ShipperOptions

PREFIX = "p/"
SYNC_S = 0.05
PASSES = 6


def keys_of(store: MemoryStore, generation: str) -> list[str]:
    folder = layout.generation_prefix(PREFIX, generation)
    return [k for k in store.keys() if k.startswith(folder)]  # noqa: SIM118 (a method)


@pytest.mark.parametrize("refused", ["differential", "snapshot"])
async def test_a_refused_delete_is_counted_logged_and_does_not_slow_shipping(
    tmp_path: Path, refused: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    store = MemoryStore()
    engine = Engine(tmp_path / "kv.sqlite", redo_log=True)
    # A zero window: every generation but the current one may go.
    shipper = Shipper(
        engine, store, PREFIX, ShipperOptions(retention_s=0.0, sync_interval_s=SYNC_S)
    )
    try:
        await shipper.sync_once()
        first = shipper.stats.generation
        assert first is not None
        await engine.atomic_write(put(0))
        await shipper.sync_once()
        before = keys_of(store, first)
        key = next(k for k in before if k.endswith("/differential") == (refused == "differential"))
        store.refuse_delete(key)
        time.sleep(0.002)  # a later generation name
        await shipper.start_generation("rotation")

        # Run the loop for a few passes, writing a commit before each.
        delays: list[float] = []
        stop = asyncio.Event()

        async def pass_done(event: asyncio.Event, seconds: float) -> None:
            delays.append(seconds)
            if len(delays) >= PASSES:
                event.set()
            await engine.atomic_write(put(len(delays)))
            await asyncio.sleep(min(seconds, SYNC_S))

        monkeypatch.setattr(shipper_module, "_sleep_until", pass_done)
        caplog.set_level(logging.INFO, logger="denokv.shipper")
        await asyncio.wait_for(shipper.run(stop), timeout=60)
        metrics = {m.name: m.samples[0].value for m in shipper.metrics()}
    finally:
        shipper.close()
        engine.close()

    stats = shipper.stats
    assert stats.errors >= 1 and metrics["denokv_s3_errors"] >= 1
    assert stats.last_error is not None and key in stats.last_error
    assert "AccessDenied" in stats.last_error
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(key in w and "AccessDenied" in w for w in warnings), warnings
    assert first not in stats.retention_deleted
    assert not any(f"deleted generation {first}" in r.getMessage() for r in caplog.records)
    # The refused key is still there; refusing the differential keeps the whole generation.
    assert key in keys_of(store, first)
    if refused == "differential":
        assert keys_of(store, first) == before
        assert first in [g.name for g in await list_generations(store, PREFIX)]
    # Shipping went on at its interval: every commit was shipped by the next pass.
    assert all(d <= SYNC_S for d in delays), delays
    conn = sqlite3.connect(tmp_path / "kv.sqlite")
    try:
        assert conn.execute("select count(*) from denokv_redo_log").fetchone() == (0,)
    finally:
        conn.close()
