"""The read cache against a model: random writes, bulk changes and reads through two
engines (the main one and a worker's on the same counters) must always read what a
plain dictionary says. Keys share only 4 slots here, so most of them collide."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from denokv import read_cache, tables
from denokv.engine import Engine
from denokv.operations import AtomicWrite, Mutation, MutationKind, ReadRange, ValueEncoding
from denokv.read_cache import WriteCounters
from denokv.writer import Tx, now_ms

KEYS = st.sampled_from([b"\x02k%d\x00" % n for n in range(6)])
VALUES = st.binary(min_size=0, max_size=12)


class CacheAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        path = Path(self.dir.name) / "kv.sqlite"
        self.main = Engine(path, sweep_expired=False)  # no unit of its own between steps
        assert self.main.write_counters is not None
        counters = WriteCounters(os.dup(self.main.write_counters.fd))
        self.worker = Engine(path, writer=False, write_counters=counters)
        self.model: dict[bytes, bytes] = {}

    def teardown(self) -> None:
        self.worker.close()
        self.main.close()
        self.dir.cleanup()

    @rule(key=KEYS, value=VALUES)
    def set(self, key: bytes, value: bytes) -> None:
        self.main.atomic_write_sync(
            AtomicWrite(mutations=(Mutation(key, MutationKind.SET, value, ValueEncoding.BYTES),))
        )
        self.model[key] = value

    @rule(key=KEYS, value=VALUES)
    def set_already_expired(self, key: bytes, value: bytes) -> None:
        mutation = Mutation(key, MutationKind.SET, value, ValueEncoding.BYTES, now_ms() - 1)
        self.main.atomic_write_sync(AtomicWrite(mutations=(mutation,)))
        self.model.pop(key, None)

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.main.atomic_write_sync(AtomicWrite(mutations=(Mutation(key, MutationKind.DELETE),)))
        self.model.pop(key, None)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=3), value=VALUES)
    def load_rows(self, keys: list[bytes], value: bytes) -> None:
        def job(tx: Tx) -> None:
            rows = [
                tables.KvRow(k, value, int(ValueEncoding.BYTES), tx.new_version()) for k in keys
            ]
            tables.put_rows(tx.conn, rows)

        self.main.run_sync(job)
        for k in keys:
            self.model[k] = value

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.main.run_sync(lambda tx: tables.clear_kv(tx.conn))
        self.model.clear()

    @rule(key=KEYS, through_worker=st.booleans())
    def read_one(self, key: bytes, through_worker: bool) -> None:
        self.read([key], through_worker)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=4), through_worker=st.booleans())
    def read(self, keys: list[bytes], through_worker: bool) -> None:
        engine = self.worker if through_worker else self.main
        found = engine.read([ReadRange(k, k + b"\x00", 1) for k in keys])
        got = [rows[0].value if rows else None for rows in found]
        assert got == [self.model.get(k) for k in keys]

    @invariant()
    def every_slot_is_even_between_units(self) -> None:
        counters = self.main.write_counters
        assert counters is not None
        assert all(v % 2 == 0 for v in counters.values[:4])


@pytest.fixture
def four_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_cache, "_MASK", 3)


def test_the_cache_reads_what_the_model_holds(four_slots: None) -> None:
    state = CacheAgainstModel.TestCase
    state.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
    state().runTest()
