"""A mass expiry is swept in bounded batches, each one captured for the backup.

The reproduction from the issue: 70,000 keys written with a TTL, the server
stopped, restarted after they expired. The start-up sweep used to delete them in
one commit whose redo capture overflowed its 2-byte index and killed the writer,
so every later write hung. Now each batch is its own commit of at most
`SWEEP_BATCH` keys, writes are served between batches, and the backup ends up
equal to the primary.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import denokv
from denokv import writer as writer_module
from denokv.engine import Engine
from denokv.operations import AtomicWrite, Mutation, MutationKind, ValueEncoding
from denokv.versionstamp import version_of
from tests.support.paths import ROOT
from tests.support.processes import ServerProcess
from tests.support.s3 import s3_env

KEYS = 70_000
PREFIX = "expiry/"
PATIENCE_S = 60


def expiring_writes(count: int, expire_at_ms: int, tag: bytes = b"e") -> list[AtomicWrite]:
    keys = [b"\x02%s%06d\x00" % (tag, i) for i in range(count)]
    return [
        AtomicWrite(
            mutations=tuple(
                Mutation(k, MutationKind.SET, b"v", ValueEncoding.BYTES, expire_at_ms)
                for k in keys[start : start + 1000]
            )
        )
        for start in range(0, count, 1000)
    ]


def redo_commits(path: Path) -> dict[bytes, list[bytes]]:
    """Captured deletions grouped by commit versionstamp (10 bytes) -> their 12-byte stamps."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "select versionstamp12 from denokv_redo_log where v is null order by versionstamp12"
        ).fetchall()
    finally:
        conn.close()
    commits: dict[bytes, list[bytes]] = {}
    for (stamp,) in rows:
        commits.setdefault(stamp[:10], []).append(stamp)
    return commits


def live_keys(path: Path) -> int:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        count: int = conn.execute("select count(*) from kv").fetchone()[0]
        return count
    finally:
        conn.close()


@pytest.mark.slow
async def test_a_mass_expiry_after_restart_is_swept_in_captured_batches(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    with Engine(path, redo_log=True, sweep_expired=False) as engine:
        expire_at = int(time.time() * 1000) + 1500
        for write in expiring_writes(KEYS, expire_at):
            assert (await engine.atomic_write(write)).ok
    await asyncio.sleep(max(0.0, expire_at / 1000 - time.time()) + 0.1)

    with Engine(path, redo_log=True) as engine:  # the start-up sweep begins at once
        result = await asyncio.wait_for(
            engine.atomic_write(expiring_writes(1, -1, b"plain")[0]), PATIENCE_S
        )
        assert result.ok, "a write during the sweep was not served"
        deadline = time.monotonic() + PATIENCE_S
        while live_keys(path) > 1:
            assert time.monotonic() < deadline, "the sweep did not finish"
            await asyncio.sleep(0.2)
        assert engine.writer is not None and engine.writer.alive
        assert engine.writer.stats.expired == KEYS

    commits = redo_commits(path)
    assert sum(len(stamps) for stamps in commits.values()) == KEYS
    assert len(commits) >= KEYS // writer_module.SWEEP_BATCH
    for stamps in commits.values():
        assert len(stamps) <= writer_module.SWEEP_BATCH
        assert stamps[-1].endswith(b"\xff\xff"), "a batch does not end on a boundary"
        assert all(int.from_bytes(s[10:], "big") < 0xFFFF for s in stamps[:-1])


async def test_writes_are_served_between_sweep_batches(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    count = 10 * writer_module.SWEEP_BATCH
    with Engine(path, redo_log=True, sweep_expired=False) as engine:
        expire_at = int(time.time() * 1000) + 1000
        for write in expiring_writes(count, expire_at):
            assert (await engine.atomic_write(write)).ok
    await asyncio.sleep(max(0.0, expire_at / 1000 - time.time()) + 0.1)

    write_versions: list[int] = []
    with Engine(path, redo_log=True) as engine:
        for i in itertools.count():
            write = expiring_writes(1, -1, b"w%d" % i)[0]
            result = await asyncio.wait_for(engine.atomic_write(write), PATIENCE_S)
            write_versions.append(version_of(result.versionstamp))
            assert engine.writer is not None
            if engine.writer.stats.expired >= count or i > 10_000:
                break
    sweep_versions = sorted(version_of(c) for c in redo_commits(path))
    inside = [v for v in write_versions if sweep_versions[0] < v < sweep_versions[-1]]
    assert inside, "no write was committed while the sweep was under way"


@pytest.mark.s3
@pytest.mark.slow
def test_mass_expiry_through_the_server_with_backup_then_restart(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = ServerProcess(
        tmp_path / "primary.sqlite",
        extra_args=[
            "--s3-bucket", bucket, "--s3-prefix", PREFIX, "--s3-endpoint", endpoint,
            "--s3-force-path-style", "--s3-sync-interval", "200ms",
        ],
        env=s3_env(),
    )  # fmt: skip
    srv.start()
    expire_in = 9_000

    async def fill() -> None:
        async with denokv.open_kv(srv.url, access_token=srv.token) as kv:
            for start in range(0, KEYS, 1000):
                op = kv.atomic()
                for i in range(start, start + 1000):
                    op.set(["cache", i], i, expire_in=expire_in)
                assert (await op.commit()).ok

    asyncio.run(fill())
    filled = time.time()
    assert srv.stop() == 0
    time.sleep(max(0.0, filled + expire_in / 1000 + 1 - time.time()))  # every key has expired

    srv.start()
    try:
        deadline = time.monotonic() + PATIENCE_S
        while httpx.get(srv.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the restarted primary never became ready"
            time.sleep(0.2)

        async def after() -> None:
            async with denokv.open_kv(srv.url, access_token=srv.token) as kv:
                assert (await asyncio.wait_for(kv.set(["after"], "restart"), PATIENCE_S)).ok

        asyncio.run(after())
        while live_keys(srv.db_path) > 1:
            assert time.monotonic() < deadline, "the sweep did not finish"
            time.sleep(0.2)
        time.sleep(1.5)  # a few sync intervals: the last batches reach S3
    finally:
        assert srv.stop() == 0
    out = tmp_path / "restored.sqlite"
    done = subprocess.run(
        [
            sys.executable, "-m", "cli.main", "--sqlite-path", str(out), "pitr", "restore",
            "--s3-bucket", bucket, "--s3-prefix", PREFIX, "--s3-endpoint", endpoint,
            "--s3-force-path-style",
        ],
        cwd=ROOT, env=s3_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert live_keys(out) == 1, "the backup does not match the primary after the sweep"
