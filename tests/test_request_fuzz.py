"""Random requests, well-formed or not: a 200 or a documented 400, and a 400 changes nothing.

Writes: hypothesis builds `AtomicWrite` messages from every field of the
protocol (checks with versionstamps of any length, every mutation kind and
unknown ones, values of every encoding and unknown ones, sum bounds, expiry
times, enqueues with dead-letter keys and backoff schedules), mostly valid so
that most reach the stored values. Keys come mostly from a small pool seeded
with values of each encoding, so sums, minimums and maximums meet values
they cannot combine with. Each write goes through the call a request takes
past admission (`UnaryCalls.write_body`) and the one error ladder. Nothing
may reach the catch-all (a 500) or be logged as an error, and a write that is
refused must leave the whole file as it was.

Reads: random `SnapshotRead` messages on the seeded file, whose contents as a
dictionary are the model: every 200 must hold exactly the model's rows for
each range, in order, up to its limit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from denokv import texts as T
from denokv.engine import Engine
from denokv.keys import encode_key
from denokv.proto import datapath_pb2 as pb
from denokv.server.app import KvServer, ServerConfig
from denokv.server.pipeline import error_reply
from denokv.v8_sum import encode_v8_bigint, encode_v8_double

TOKEN = "fuzz-token-0123456789"
POOL = [encode_key(("n", i)) for i in range(6)]
SEEDED = [  # (value, encoding) under the first five keys of POOL; the sixth stays absent
    ((7).to_bytes(8, "little"), pb.VE_LE64),
    (encode_v8_bigint(5), pb.VE_V8),
    (encode_v8_double(2.5), pb.VE_V8),
    (b"\xff\x0fS\x03abc", pb.VE_V8),  # a V8 string
    (b"raw bytes", pb.VE_BYTES),
]

keys = st.one_of(  # the pool three times in five: most mutations meet a stored value
    *[st.sampled_from(POOL)] * 3,
    st.binary(max_size=12),
    st.builds(encode_key, st.tuples(st.text(max_size=4), st.integers(-3, 3))),
)
values = st.one_of(
    st.binary(max_size=12),
    st.integers(0, 2**64 - 1).map(lambda n: n.to_bytes(8, "little")),
    st.integers(-(2**70), 2**70).map(encode_v8_bigint),
    st.floats(allow_nan=True).map(encode_v8_double),
)
# Mostly what a client sends, sometimes what none should: each list repeats its valid
# entries, so most writes get past validation and reach the stored values.
encodings: st.SearchStrategy[Any] = st.sampled_from(
    [pb.VE_V8] * 4 + [pb.VE_LE64] * 4 + [pb.VE_BYTES] * 2 + [0, 7]
)
kinds: st.SearchStrategy[Any] = st.sampled_from(
    [pb.M_SET] * 3
    + [pb.M_DELETE, pb.M_SUM, pb.M_SUM, pb.M_MAX, pb.M_MIN]
    + [pb.M_SET_SUFFIX_VERSIONSTAMPED_KEY, 0, 6]
)
expiries = st.sampled_from([0] * 6 + [-1, 1, 2**62, 2**63 - 1])
versionstamps = st.one_of(
    st.just(b""), st.binary(min_size=10, max_size=10), st.just(b"\0" * 10), st.binary(max_size=12)
)
checks = st.lists(st.builds(pb.Check, key=keys, versionstamp=versionstamps), max_size=3)


@st.composite
def mutations(draw: st.DrawFn) -> pb.Mutation:
    m = pb.Mutation(key=draw(keys), mutation_type=draw(kinds), expire_at_ms=draw(expiries))
    if m.mutation_type != pb.M_DELETE or draw(st.integers(0, 4)) == 0:
        m.value.CopyFrom(pb.KvValue(data=draw(values), encoding=draw(encodings)))
    if m.mutation_type == pb.M_SUM and draw(st.integers(0, 2)) == 0:
        m.sum_min, m.sum_max = draw(values), draw(values)
        m.sum_clamp = draw(st.booleans())
    return m


enqueues = st.builds(
    pb.Enqueue,
    payload=st.binary(max_size=16),
    deadline_ms=st.sampled_from([0, -5, 1, 2**40, 2**63 - 1]),
    keys_if_undelivered=st.lists(keys, max_size=3),
    backoff_schedule=st.lists(st.integers(0, 2**32 - 1), max_size=3),
)
writes = st.builds(
    pb.AtomicWrite,
    checks=st.one_of(st.just([]), st.just([]), st.just([]), checks),
    mutations=st.lists(mutations(), max_size=5),
    enqueues=st.one_of(st.just([]), st.lists(enqueues, max_size=2)),
)
bodies = st.one_of(writes.map(lambda w: w.SerializeToString()), st.binary(max_size=24))

# The 400 texts of this call: every documented one (a template up to its first
# field), what a sum, min or max says when it cannot combine its operands (the
# texts of Deno's own engine, `denokv.v8_sum`), and the prefixes of the same
# with the names of the values' types in them.
KNOWN = (
    *(text.split("{")[0] for name, text in vars(T).items()
      if name.isupper() and isinstance(text, str)),
    "Some of the parameters are not valid V8 values",
    "Min/max parameters have different types than the operand",
    "The result of a Sum operation would exceed its range limit",
    "Invalid sum operand", "unsupported value type", "operand cannot be empty",
    "invalid v8 value", "Cannot sum ", "Failed to perform '",
)  # fmt: skip
SEED = pb.AtomicWrite(mutations=[
    pb.Mutation(key=key, mutation_type=pb.M_SET, value=pb.KvValue(data=v, encoding=e))
    for key, (v, e) in zip(POOL, SEEDED, strict=False)
])  # fmt: skip


def state(db: Path) -> tuple[object, ...]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return tuple(
            conn.execute(f"select * from {table} order by 1, 2").fetchall()
            for table in ("kv", "data_version", "queue", "queue_running")
        )
    finally:
        conn.close()


async def call(server: KvServer, body: bytes) -> tuple[int, bytes]:
    """`atomic_write` past admission, answered by the one error ladder."""
    try:
        status, _, answer = await server.unary.write_body(body)
    except Exception as exc:
        reply = error_reply(exc, "/v2/atomic_write")
        assert reply is not None
        status, _, answer = reply
    return status, answer


def test_any_write_gets_200_or_a_documented_400_and_a_refusal_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    files = itertools.count()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(bodies)
    def one(body: bytes) -> None:
        # A fresh file seeded the same way for every example: a failure replays alike.
        db = tmp_path / f"kv{next(files)}.sqlite"
        engine = Engine(str(db))
        try:
            server = KvServer(engine, ServerConfig(access_token=TOKEN))
            assert asyncio.run(call(server, SEED.SerializeToString()))[0] == 200
            before = state(db)
            caplog.clear()
            status, answer = asyncio.run(call(server, body))
            after = state(db)
        finally:
            engine.close()
            for path in tmp_path.glob(f"{db.name}*"):
                path.unlink()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], errors
        if status == 200:
            out = pb.AtomicWriteOutput.FromString(answer)
            assert out.status in (pb.AW_SUCCESS, pb.AW_CHECK_FAILURE)
            if out.status == pb.AW_CHECK_FAILURE:
                assert after == before
            else:
                assert after[1] != before[1], "a write that succeeded got no new version"
            return
        assert status == 400, (status, answer)
        assert answer.decode().startswith(KNOWN), answer
        assert after == before

    one()


class _Request:
    """What a unary call reads of a request: headers and a body."""

    headers = {"authorization": f"Bearer {TOKEN}", "x-denokv-version": "3",
               "x-denokv-database-id": "00000000-0000-0000-0000-000000000000"}  # fmt: skip

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def body(self) -> bytes:
        return self._body


read_ranges = st.builds(
    pb.ReadRange,
    start=st.one_of(keys, st.sampled_from([b"", b"\x02", b"\x02n"])),
    end=st.one_of(keys, st.sampled_from([b"\x02n\x00\xff", b"\xff"] * 2)),
    limit=st.sampled_from([1, 2, 3, 5, 10, 100] * 3 + [-1, 0, 1000, 1001, 2**31 - 1]),
    reverse=st.booleans(),
)
reads = st.builds(pb.SnapshotRead, ranges=st.lists(read_ranges, max_size=4))
read_bodies = st.one_of(*[reads.map(lambda r: r.SerializeToString())] * 3, st.binary(max_size=24))


def test_any_read_gets_the_model_s_rows_or_a_documented_400(tmp_path: Path) -> None:
    """The seeded file as a dictionary is the model: a 200 must hold exactly its rows."""
    db = tmp_path / "kv.sqlite"
    engine = Engine(str(db))
    server = KvServer(engine, ServerConfig(access_token=TOKEN))
    model = {key: (v, e) for key, (v, e) in zip(POOL, SEEDED, strict=False)}
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(call(server, SEED.SerializeToString()))[0] == 200
        before = state(db)

        async def read(body: bytes) -> tuple[int, bytes]:
            try:
                status, _, answer = await server.unary.snapshot_read(_Request(body))
            except Exception as exc:
                reply = error_reply(exc, "/v2/snapshot_read")
                assert reply is not None
                status, _, answer = reply
            return status, answer

        @settings(max_examples=300, deadline=None)
        @given(read_bodies)
        def one(body: bytes) -> None:
            status, answer = loop.run_until_complete(read(body))
            if status != 200:
                assert status == 400, (status, answer)
                assert answer.decode().startswith(KNOWN), answer
                return
            asked = pb.SnapshotRead.FromString(body)
            out = pb.SnapshotReadOutput.FromString(answer)
            assert len(out.ranges) == len(asked.ranges)
            for want, got in zip(asked.ranges, out.ranges, strict=True):
                rows = sorted(k for k in model if want.start <= k < want.end)
                if want.reverse:
                    rows.reverse()
                expect = [(k, *model[k]) for k in rows[: want.limit]]
                assert [(e.key, e.value, e.encoding) for e in got.values] == expect

        one()
        assert state(db) == before
    finally:
        loop.close()
        engine.close()
