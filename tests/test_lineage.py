"""Every generation is one unbroken history of one primary (issue: backups you can bet on).

Each test reproduces one way the backup used to end in a state that never
existed, with real `denokv serve` processes against a real S3 server (moto):
a rolled-back file, a restore followed by a new primary while a replica runs,
a second primary on the same prefix, a missing segment, and commits made
without capture.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import denokv
from tests.support.backup_proofs import wait_shipped
from tests.support.dbfile import Row, backlog, kv_rows, point_of
from tests.support.fault_proxy import FaultProxy
from tests.support.paths import ROOT
from tests.support.processes import ServerProcess
from tests.support.s3 import list_keys, s3_args, s3_client, s3_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.s3, pytest.mark.slow]

PREFIX = "lineage/"
Rows = list[Row]


def primary(db: Path, endpoint: str, bucket: str, *extra: str) -> ServerProcess:
    return ServerProcess(
        db, extra_args=[*s3_args(endpoint, bucket, PREFIX), "--s3-sync-interval", "200ms", *extra],
        env=s3_env(),
    )  # fmt: skip


def replica(db: Path, endpoint: str, bucket: str, token: str) -> ServerProcess:
    return ServerProcess(
        db, token=token, env=s3_env(),
        extra_args=[*s3_args(endpoint, bucket, PREFIX), "--sync-from-s3",
                    "--s3-poll-interval", "200ms"],
    )  # fmt: skip


def copy_file(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite file (a volume snapshot, a clone)."""
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)


def restore(db: Path, endpoint: str, bucket: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cli.main", "--sqlite-path", str(db), "pitr", "restore",
           *s3_args(endpoint, bucket, PREFIX), *extra]  # fmt: skip
    return subprocess.run(
        cmd, cwd=ROOT, env=s3_env(), capture_output=True, text=True, timeout=120, check=False
    )


def restored_rows(tmp_path: Path, endpoint: str, bucket: str, name: str, *extra: str) -> Rows:
    out = tmp_path / name
    done = restore(out, endpoint, bucket, *extra)
    assert done.returncode == 0, done.stderr
    return kv_rows(out)


async def phase(url: str, token: str, tag: str, count: int = 15) -> None:
    async with denokv.open_kv(url, access_token=token) as kv:
        for i in range(count):
            await kv.set([tag, i], {"tag": tag, "i": i})
        await kv.atomic().sum(["total"], count).set(["last"], tag).commit()
        await kv.delete([tag, 0])


def run_phase(srv: ServerProcess, tag: str) -> None:
    asyncio.run(phase(srv.url, srv.token, tag))


def test_a_rolled_back_file_starts_a_new_history(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    db = tmp_path / "primary.sqlite"
    srv = primary(db, endpoint, bucket).start()
    run_phase(srv, "a")
    wait_shipped(db)
    copy_file(db, tmp_path / "older-copy.sqlite")
    run_phase(srv, "b")
    wait_shipped(db)
    at_b = kv_rows(db)
    after_b = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 1)) + "Z"
    assert srv.stop() == 0
    time.sleep(1.5)  # the new history starts after that moment
    for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copy(tmp_path / "older-copy.sqlite", db)  # the volume is rolled back
    srv.start()
    try:
        run_phase(srv, "c")
        wait_shipped(db)
        expected = kv_rows(db)
    finally:
        assert srv.stop() == 0
    assert not any(k.startswith(b"\x02b\x00") for k, *_ in expected)
    assert restored_rows(tmp_path, endpoint, bucket, "latest.sqlite") == expected
    # The history before the roll-back still restores as it was (by time: versionstamps
    # of the new history may repeat those of the old one after a roll-back).
    assert restored_rows(tmp_path, endpoint, bucket, "at-b.sqlite", "--at", after_b) == at_b


def test_restore_then_a_new_primary_while_a_replica_follows(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    first = primary(tmp_path / "first.sqlite", endpoint, bucket).start()
    follower = replica(tmp_path / "replica.sqlite", endpoint, bucket, first.token).start()
    second: ServerProcess | None = None
    try:
        run_phase(first, "a")
        wait_shipped(first.db_path)
        stamp_a = point_of(first.db_path)
        run_phase(first, "b")
        wait_shipped(first.db_path)
        at_b = kv_rows(first.db_path)
        wait_until(lambda: kv_rows(follower.db_path) == at_b, 30, "the replica followed the first")
        assert first.stop() == 0
        restored = tmp_path / "restored.sqlite"
        done = restore(restored, endpoint, bucket, "--at", stamp_a)
        assert done.returncode == 0, done.stderr
        second = primary(restored, endpoint, bucket).start()
        run_phase(second, "c")
        wait_shipped(restored)
        expected = kv_rows(restored)
        assert not any(k.startswith(b"\x02b\x00") for k, *_ in expected)
        wait_until(
            lambda: kv_rows(follower.db_path) == expected, 40, "the replica followed the second"
        )
    finally:
        follower.stop()
        if second is not None:
            second.stop()
        first.stop()


def test_a_second_primary_on_the_same_prefix_does_not_ship(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    first = primary(tmp_path / "first.sqlite", endpoint, bucket).start()
    second = primary(tmp_path / "second.sqlite", endpoint, bucket, "--s3-retention", "1s")
    try:
        run_phase(first, "a")
        wait_shipped(first.db_path)
        generations_before = set(_generations(endpoint, bucket))
        second.start()
        run_phase(second, "intruder")
        fenced = "another primary holds the backup lease"
        wait_until(
            lambda: fenced in httpx.get(second.url + "/readyz").text, 20, "the lease refusal"
        )
        time.sleep(1.5)  # several of the second's sync passes
        assert backlog(second.db_path) > 0, "the second primary shipped"
        assert set(_generations(endpoint, bucket)) == generations_before
        assert "denokv_backup_lease_held 0.0" in httpx.get(second.url + "/metrics").text
        run_phase(first, "b")
        wait_shipped(first.db_path)
        expected = kv_rows(first.db_path)
    finally:
        second.stop()
        first.stop()
    assert restored_rows(tmp_path, endpoint, bucket, "latest.sqlite") == expected


def test_a_missing_segment_fails_restore_and_stops_a_replica(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path / "primary.sqlite", endpoint, bucket).start()
    try:
        for tag in ("a", "b", "c"):
            run_phase(srv, tag)
            wait_shipped(srv.db_path)
            time.sleep(0.3)  # a segment per phase
    finally:
        assert srv.stop() == 0
    logs = sorted(k for k in list_keys(endpoint, bucket, PREFIX) if "/logs/" in k)
    assert len(logs) >= 3
    s3_client(endpoint).delete_object(Bucket=bucket, Key=logs[len(logs) // 2])
    done = restore(tmp_path / "restored.sqlite", endpoint, bucket)
    assert done.returncode != 0
    assert done.stderr.startswith("error: ") and "missing" in done.stderr
    assert "Traceback" not in done.stderr
    follower = replica(tmp_path / "replica.sqlite", endpoint, bucket, srv.token).start()
    try:
        wait_until(
            lambda: "missing" in httpx.get(follower.url + "/readyz").text,
            30,
            "the replica's refusal",
        )
        assert httpx.get(follower.url + "/readyz").status_code == 503
    finally:
        follower.stop()


def test_commits_made_without_capture_are_not_skipped(
    tmp_path: Path, fault_proxy: tuple[FaultProxy, str, str]
) -> None:
    proxy, endpoint, bucket = fault_proxy
    db = tmp_path / "primary.sqlite"
    srv = primary(db, endpoint, bucket).start()
    run_phase(srv, "a")
    wait_shipped(db)
    assert srv.stop() == 0
    plain = ServerProcess(db, token=srv.token).start()  # no --s3-bucket: nothing captured
    run_phase(plain, "uncaptured")
    assert plain.stop() == 0
    # S3 answers slowly, so a captured write lands before the shipper's first look.
    proxy.slow(2.0)
    srv.start()
    try:
        run_phase(srv, "c")
        proxy.passthrough()
        wait_shipped(db)
        expected = kv_rows(db)
    finally:
        proxy.passthrough()
        assert srv.stop() == 0
    assert any(k.startswith(b"\x02uncaptured\x00") for k, *_ in expected)
    assert restored_rows(tmp_path, endpoint, bucket, "latest.sqlite") == expected


def test_a_second_primary_taking_over_after_the_lease_expires(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    """When the holder dies without releasing, the standby ships after one TTL."""
    endpoint, bucket = s3_bucket
    first = primary(tmp_path / "first.sqlite", endpoint, bucket, "--s3-lease-ttl", "3s").start()
    run_phase(first, "a")
    wait_shipped(first.db_path)
    copy_file(first.db_path, tmp_path / "standby.sqlite")
    first.stop(sig=signal.SIGKILL)
    standby = ServerProcess(
        tmp_path / "standby.sqlite", token=first.token, env=s3_env(),
        extra_args=[*s3_args(endpoint, bucket, PREFIX), "--s3-sync-interval", "200ms",
                    "--s3-lease-ttl", "3s"],
    ).start()  # fmt: skip
    try:
        run_phase(standby, "b")
        wait_until(lambda: backlog(standby.db_path) == 0, 30, "the standby shipping")
        expected = kv_rows(standby.db_path)
    finally:
        standby.stop()
    assert restored_rows(tmp_path, endpoint, bucket, "latest.sqlite") == expected


def _generations(endpoint: str, bucket: str) -> list[str]:
    keys = list_keys(endpoint, bucket, PREFIX + "generations/")
    return sorted({k.split("/")[2] for k in keys if k.endswith("/differential")})
