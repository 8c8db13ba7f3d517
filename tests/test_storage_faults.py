"""Storage faults: a full disk, another process holding the write lock, an I/O error.

In each case writes are answered promptly with a retryable error (503 on the
server, `StorageFault` in the engine), reads keep working, writes resume by
themselves once the condition clears, and no acknowledged write is lost, which
is checked by reopening the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from denokv.engine import Engine
from denokv.engine_errors import StorageFault
from denokv.operations import (
    AtomicWrite,
    Mutation,
    MutationKind,
    ReadRange,
    ValueEncoding,
    WriteResult,
    WriteStatus,
)
from denokv.writer import Tx
from tests.support.paths import ROOT

PATIENCE_S = 10


def put(key: bytes, value: bytes) -> AtomicWrite:
    return AtomicWrite(mutations=(Mutation(key, MutationKind.SET, value, ValueEncoding.BYTES),))


def keys_in(path: Path) -> set[bytes]:
    with Engine(path, read_only=True) as engine:
        return {e.key for e in engine.read([ReadRange(b"", b"\xff", 1000)])[0]}


async def write_all(engine: Engine, writes: list[AtomicWrite]) -> list[WriteResult | BaseException]:
    return await asyncio.wait_for(
        asyncio.gather(*(engine.atomic_write(w) for w in writes), return_exceptions=True),
        PATIENCE_S,
    )


async def test_disk_full_in_a_group_commit_then_space_freed(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    engine = Engine(path)
    try:
        assert (await engine.atomic_write(put(b"seed", b"s"))).ok

        def cap(tx: Tx) -> int:
            conn = tx.conn
            pages: int = conn.execute("pragma page_count").fetchone()[0]
            conn.execute(f"pragma max_page_count = {pages + 8}")
            return pages

        pages = await engine.run(cap, name="test: cap the file")
        acknowledged: set[bytes] = {b"seed"}
        refused = 0
        for round_ in range(8):  # 30 KB values: the cap is reached within a few groups
            batch = [put(b"r%d-%d" % (round_, i), os.urandom(30_000)) for i in range(6)]
            for write, result in zip(batch, await write_all(engine, batch), strict=True):
                if isinstance(result, StorageFault):
                    assert result.kind == "disk full"
                    assert str(result) == "The database disk is full; try again later."
                    refused += 1
                else:
                    assert isinstance(result, WriteResult)
                    assert result.status is WriteStatus.SUCCESS
                    acknowledged.add(write.mutations[0].key)
        assert refused > 0, "the cap was never reached"
        assert engine.writer is not None and engine.writer.alive
        assert "disk full" in engine.writer.faults.active
        # Reads go on while writes fail.
        assert engine.read([ReadRange(b"seed", b"seed\x00", 1)])[0][0].value == b"s"

        await engine.run(
            lambda tx: tx.conn.execute(f"pragma max_page_count = {pages * 1000}"),
            name="test: free space",
        )
        assert (await asyncio.wait_for(engine.atomic_write(put(b"after", b"a")), PATIENCE_S)).ok
        acknowledged.add(b"after")
        assert not engine.writer.faults.active, "the fault did not clear"
    finally:
        engine.close()
    assert acknowledged <= keys_in(path), "an acknowledged write was lost"


LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("begin immediate")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("commit")
"""


async def test_another_process_holding_the_write_lock_for_two_seconds(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    engine = Engine(path)
    try:
        assert (await engine.atomic_write(put(b"before", b"b"))).ok
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path), "2"], stdout=subprocess.PIPE
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        started = time.monotonic()
        with pytest.raises(StorageFault) as refused:
            await asyncio.wait_for(engine.atomic_write(put(b"during", b"d")), PATIENCE_S)
        waited = time.monotonic() - started
        assert refused.value.kind == "locked"
        assert waited < 1.9, f"the write was held {waited:.1f} s instead of answered"
        assert engine.read([ReadRange(b"before", b"before\x00", 1)])[0], "reads go on"
        holder.wait(PATIENCE_S)
        result = await asyncio.wait_for(engine.atomic_write(put(b"after", b"a")), PATIENCE_S)
        assert result.ok
    finally:
        engine.close()
    assert {b"before", b"after"} <= keys_in(path)
    assert b"during" not in keys_in(path)


# -- an I/O error, injected into the flush of one commit ------------------------------

FAULTY_WRITER = """
import asyncio, json, sys
from pathlib import Path
from denokv.engine import Engine
from denokv.engine_errors import StorageFault
from denokv.operations import AtomicWrite, Mutation, MutationKind, ValueEncoding

def put(key):
    return AtomicWrite(mutations=(Mutation(key, MutationKind.SET, b"v", ValueEncoding.BYTES),))

async def main(path, fault):
    engine = Engine(path)
    out = {}
    for key in (b"a", b"b", b"c"):
        if key == b"b":
            fault.touch()
        try:
            out[key.decode()] = (await engine.atomic_write(put(key))).ok
        except StorageFault as exc:
            out[key.decode()] = exc.kind
        fault.unlink(missing_ok=True)
    engine.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
"""


@pytest.fixture(scope="session")
def fsync_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler is needed to build tests/native/fsync_shim.c")
    out = tmp_path_factory.mktemp("native") / "fsync_shim.so"
    source = ROOT / "tests" / "native" / "fsync_shim.c"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(source), "-ldl"], check=True
    )
    return out


def test_an_io_error_in_one_commit_fails_it_and_the_next_write_works(
    tmp_path: Path, fsync_shim: Path
) -> None:
    path = tmp_path / "kv.sqlite"
    fault = tmp_path / "fail-fsync"
    env = {**os.environ, "LD_PRELOAD": str(fsync_shim), "DENOKV_FSYNC_FAIL_FILE": str(fault)}
    proc = subprocess.run(
        [sys.executable, "-c", FAULTY_WRITER, str(path), str(fault)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome == {"a": True, "b": "I/O error", "c": True}
    assert "writes are failing: I/O error" in proc.stderr
    assert "writes resumed after I/O error" in proc.stderr
    kept = keys_in(path)
    assert {b"a", b"c"} <= kept, "an acknowledged write was lost"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
