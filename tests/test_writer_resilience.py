"""The writer cannot be killed by a unit of work; if its thread stops anyway, nothing waits.

Each reproduction here hung every later write forever before the writer caught
more than `sqlite3.Error` (issue: "The writer never dies").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import denokv
from denokv import mutations
from denokv.client.embedded import EmbeddedBackend
from denokv.client.errors import KvUnavailableError, KvValidationError
from denokv.engine import Engine
from denokv.engine_errors import WriteError, WriterStopped
from denokv.operations import (
    AtomicWrite,
    Mutation,
    MutationKind,
    ReadRange,
    ValueEncoding,
    WriteResult,
    WriteStatus,
)
from denokv.proto import datapath_pb2 as pb
from denokv.server.app import KvServer, ServerConfig

TOKEN = "resilience-token-123"
PATIENCE_S = 10  # a write that has not been answered by then is hanging


def put(key: bytes, value: bytes = b"v") -> AtomicWrite:
    return AtomicWrite(mutations=(Mutation(key, MutationKind.SET, value, ValueEncoding.BYTES),))


def stored(engine: Engine, key: bytes) -> bytes | None:
    rows = engine.read([ReadRange(key, key + b"\x00", 1)])[0]
    return rows[0].value if rows else None


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "kv.sqlite", redo_log=True)
    yield eng
    eng.close()


async def test_expire_in_beyond_any_date_is_refused_and_the_next_set_works(
    tmp_path: Path,
) -> None:
    async with denokv.open_kv(str(tmp_path / "kv.sqlite")) as kv:
        with pytest.raises(KvValidationError, match="expireIn is too large: 10000000000000000000"):
            await asyncio.wait_for(kv.set(["a"], 1, expire_in=10**19), PATIENCE_S)
        result = await asyncio.wait_for(kv.set(["a"], 2), PATIENCE_S)
        assert result.ok
        assert (await kv.get(["a"])).value == 2


async def test_a_raising_commit_listener_fails_only_its_write(engine: Engine) -> None:
    assert engine.writer is not None

    def listener(conn: Any, version: int, effects: Any) -> None:
        if any(c.key == b"poison" for c in effects.changes):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")

    engine.writer.commit_listeners.append(listener)
    writes = [put(b"a"), put(b"poison"), put(b"b")]
    results = await asyncio.wait_for(
        asyncio.gather(*(engine.atomic_write(w) for w in writes), return_exceptions=True),
        PATIENCE_S,
    )
    first, poisoned, last = results
    assert isinstance(first, WriteResult) and first.status is WriteStatus.SUCCESS
    assert isinstance(poisoned, WriteError)
    assert "OverflowError" in str(poisoned)
    assert isinstance(last, WriteResult) and last.status is WriteStatus.SUCCESS
    assert stored(engine, b"poison") is None, "the failed write left a trace"
    assert stored(engine, b"a") == b"v" and stored(engine, b"b") == b"v"
    later = await asyncio.wait_for(engine.atomic_write(put(b"c")), PATIENCE_S)
    assert later.status is WriteStatus.SUCCESS
    assert engine.writer.stats.failures.get("OverflowError") == 1


async def test_an_exception_outside_sqlite_in_a_write_is_contained(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mutations.apply_write

    def flaky(conn: Any, write: AtomicWrite, version: int, now_ms: int) -> Any:
        if write.mutations[0].key == b"boom":
            raise RuntimeError("a bug in a mutation")
        return real(conn, write, version, now_ms)

    monkeypatch.setattr("denokv.writer.apply_write", flaky)
    with pytest.raises(WriteError, match="RuntimeError: a bug in a mutation"):
        await asyncio.wait_for(engine.atomic_write(put(b"boom")), PATIENCE_S)
    result = await asyncio.wait_for(engine.atomic_write(put(b"fine")), PATIENCE_S)
    assert result.status is WriteStatus.SUCCESS


async def test_a_failing_job_is_rolled_back_and_the_writer_goes_on(engine: Engine) -> None:
    from denokv import tables

    def job(tx: Any) -> None:
        tables.upsert(tx.conn, b"half", b"x", 3, tx.new_version(), -1)
        raise ValueError("the job changed its mind")

    with pytest.raises(ValueError, match="changed its mind"):
        await asyncio.wait_for(engine.run(job, name="test job"), PATIENCE_S)
    assert stored(engine, b"half") is None
    result = await asyncio.wait_for(engine.atomic_write(put(b"after")), PATIENCE_S)
    assert result.status is WriteStatus.SUCCESS


# -- if the thread stops anyway ----------------------------------------------------


def kill_writer(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the writer thread's next turn raise what no unit handler catches."""
    assert engine.writer is not None

    def die(item: Any) -> None:
        raise SystemExit("injected writer death")

    monkeypatch.setattr(engine.writer, "_handle", die)


async def test_after_writer_death_every_write_fails_fast(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    kill_writer(engine, monkeypatch)
    with pytest.raises(WriterStopped, match="injected writer death"):
        await asyncio.wait_for(engine.atomic_write(put(b"first")), PATIENCE_S)
    started = time.monotonic()
    with pytest.raises(WriterStopped):
        await engine.atomic_write(put(b"second"))
    assert time.monotonic() - started < 1.0
    assert engine.writer is not None and not engine.writer.alive
    assert engine.read([ReadRange(b"", b"\xff", 10)]) == [[]], "reads go on"


async def test_embedded_client_reports_a_stopped_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with denokv.open_kv(str(tmp_path / "kv.sqlite")) as kv:
        await kv.set(["before"], 1)
        assert isinstance(kv._backend, EmbeddedBackend)
        kill_writer(kv._backend.engine, monkeypatch)
        with pytest.raises(KvUnavailableError, match="writer stopped"):
            await asyncio.wait_for(kv.set(["after"], 1), PATIENCE_S)
        assert (await kv.get(["before"])).value == 1


async def test_server_answers_503_and_readyz_fails_after_writer_death(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = KvServer(engine, ServerConfig(access_token=TOKEN))
    transport = httpx.ASGITransport(app=server.app)
    headers = {
        "authorization": f"Bearer {TOKEN}",
        "x-denokv-version": "3",
        "x-denokv-database-id": "00000000-0000-0000-0000-000000000000",
    }
    write = pb.AtomicWrite(
        mutations=[
            pb.Mutation(
                key=b"\x02k\x00",
                mutation_type=pb.M_SET,
                value=pb.KvValue(data=b"v", encoding=pb.VE_BYTES),
            )
        ]
    ).SerializeToString()
    read = pb.SnapshotRead(
        ranges=[pb.ReadRange(start=b"", end=b"\xff", limit=10)]
    ).SerializeToString()
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/readyz")).status_code == 200
        kill_writer(engine, monkeypatch)
        for _ in range(2):
            started = time.monotonic()
            resp = await client.post("/v2/atomic_write", content=write, headers=headers)
            assert resp.status_code == 503
            assert "writer stopped" in resp.text
            assert time.monotonic() - started < 1.0 + 0.5  # the first one also waits for the death
        assert (
            await client.post("/v2/snapshot_read", content=read, headers=headers)
        ).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "writer stopped" in ready.text
        health = await client.get("/healthz")
        assert health.status_code == 503 and "writer stopped" in health.text
        metrics = (await client.get("/metrics")).text
        assert "denokv_writer_alive 0.0" in metrics
