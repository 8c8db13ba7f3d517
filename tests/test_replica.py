"""Read replicas following the S3 backup, and time travel on their files."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import denokv
from tests.support.dbfile import backlog, kv_rows, point_of
from tests.support.deno import deno_binary, deno_env
from tests.support.paths import DENO_SCRIPTS, ROOT
from tests.support.processes import ServerProcess
from tests.support.s3 import list_keys, s3_args, s3_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.s3

PREFIX = "kv/"


def start_primary(tmp_path: Path, endpoint: str, bucket: str, *extra: str) -> ServerProcess:
    return ServerProcess(
        tmp_path / "primary.sqlite",
        extra_args=[*s3_args(endpoint, bucket, PREFIX), "--s3-sync-interval", "200ms", *extra],
        env=s3_env(),
    ).start()


def replica_process(tmp_path: Path, endpoint: str, bucket: str, token: str, *extra: str,
                    name: str = "replica.sqlite") -> ServerProcess:  # fmt: skip
    return ServerProcess(
        tmp_path / name,
        token=token,
        extra_args=[*s3_args(endpoint, bucket, PREFIX), "--sync-from-s3",
                    "--s3-poll-interval", "200ms", *extra],
        env=s3_env(),
    )  # fmt: skip


def wait_ready(srv: ServerProcess, timeout: float = 30) -> None:
    wait_until(lambda: httpx.get(srv.url + "/readyz").status_code == 200, timeout, "readiness")


async def write_some(url: str, token: str, start: int, count: int) -> None:
    async with denokv.open_kv(url, access_token=token) as kv:
        for i in range(start, start + count):
            await kv.set(["item", i], {"i": i})
            if i % 5 == 0:
                await kv.delete(["item", i - 1])
        await kv.atomic().sum(["total"], count).commit()


@pytest.mark.deno
@pytest.mark.slow
def test_deno_on_a_replica_reads_watches_and_writes_through(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    primary = start_primary(tmp_path, endpoint, bucket)
    replica = replica_process(tmp_path, endpoint, bucket, primary.token,
                              "--primary-url", primary.url).start()  # fmt: skip
    try:
        wait_ready(replica)

        async def set_at_primary(key: list[str], value: str) -> None:
            async with denokv.open_kv(primary.url, access_token=primary.token) as kv:
                await kv.set(key, value)

        asyncio.run(set_at_primary(["r", "k"], "v1"))
        proc = subprocess.Popen(
            [deno_binary(), "run", "--unstable-kv", "-A", str(DENO_SCRIPTS / "replica.ts"),
             replica.url, "v1", "changed", "hello"],
            env=deno_env(primary.token), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        time.sleep(0.5)  # let the watch start
        asyncio.run(set_at_primary(["r", "w"], "changed"))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result == {"eventual": "v1", "watched": "changed", "write": True,
                          "strongRead": "hello"}  # fmt: skip

        async def primary_value() -> object:
            async with denokv.open_kv(primary.url, access_token=primary.token) as kv:
                return (await kv.get(["r", "from-replica"])).value

        assert asyncio.run(primary_value()) == "hello"
    finally:
        replica.stop()
        primary.stop()


@pytest.mark.slow
def test_without_a_primary_writes_are_disabled_and_reads_are_eventual(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    primary = start_primary(tmp_path, endpoint, bucket)
    replica = replica_process(tmp_path, endpoint, bucket, primary.token).start()
    try:
        wait_ready(replica)
        asyncio.run(write_some(primary.url, primary.token, 0, 3))

        async def check() -> None:
            async with denokv.open_kv(replica.url, access_token=primary.token) as kv:
                deadline = time.monotonic() + 20
                while (await kv.get(["total"], consistency="eventual")).value is None:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                with pytest.raises(denokv.client.errors.KvWriteDisabledError):
                    await kv.set(["x"], 1)
                with pytest.raises(
                    denokv.client.errors.KvReadDisabledError,
                    match="Strong consistency reads are not available",
                ):
                    await kv.get(["total"])  # fmt: skip

        import denokv.client.errors

        asyncio.run(check())
    finally:
        replica.stop()
        primary.stop()


@pytest.mark.slow
def test_replica_converges_after_sigkill_in_bootstrap_and_in_apply(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    primary = start_primary(tmp_path, endpoint, bucket)
    try:
        asyncio.run(write_some(primary.url, primary.token, 0, 300))
        # Restart the primary with a new generation so the snapshot holds the data.
        primary.stop()
        primary.extra_args += ["--s3-snapshot-interval", "1s"]
        primary.start()
        time.sleep(2)
        replica = replica_process(tmp_path, endpoint, bucket, primary.token)
        replica.start()
        time.sleep(0.3)
        replica.stop(sig=signal.SIGKILL)  # likely mid-bootstrap
        replica.start()
        asyncio.run(write_some(primary.url, primary.token, 300, 200))
        time.sleep(0.4)
        replica.stop(sig=signal.SIGKILL)  # likely mid-apply
        replica.start()
        wait_until(lambda: backlog(primary.db_path) == 0, 20, "primary shipped")
        target = kv_rows(primary.db_path)
        wait_until(lambda: kv_rows(replica.db_path) == target, 30, "replica converged")
        replica.stop()
    finally:
        primary.stop()


@pytest.mark.slow
def test_follows_the_primary_into_a_new_generation(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    primary = start_primary(tmp_path, endpoint, bucket, "--s3-snapshot-interval", "1s")
    replica = replica_process(tmp_path, endpoint, bucket, primary.token).start()
    try:
        wait_ready(replica)
        for round_ in range(3):
            asyncio.run(write_some(primary.url, primary.token, round_ * 50, 50))
            time.sleep(1.3)  # the primary rotates generations meanwhile
        wait_until(lambda: backlog(primary.db_path) == 0, 20, "primary shipped")
        target = kv_rows(primary.db_path)
        wait_until(lambda: kv_rows(replica.db_path) == target, 30, "replica caught up")
    finally:
        replica.stop()
        primary.stop()


def pitr(db: Path, *args: str, endpoint: str | None = None, bucket: str | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    cmd = [sys.executable, "-m", "cli.main", "--sqlite-path", str(db), "pitr", *args]
    if endpoint is not None and bucket is not None:
        cmd += s3_args(endpoint, bucket, PREFIX)
    return subprocess.run(cmd, cwd=ROOT, env=s3_env(), capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.mark.slow
def test_pitr_sync_list_info_checkout(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    primary = start_primary(tmp_path, endpoint, bucket)
    states = []
    try:
        # The first generation's snapshot is of the empty database (versionstamp zero).
        wait_until(
            lambda: any(k.endswith("/differential") for k in list_keys(endpoint, bucket, PREFIX)),
            20,
            "the first generation",
        )
        for phase in range(3):
            asyncio.run(write_some(primary.url, primary.token, phase * 10, 10))
            wait_until(lambda: backlog(primary.db_path) == 0, 20, "shipped")
            states.append((point_of(primary.db_path), kv_rows(primary.db_path)))
    finally:
        primary.stop()
    db = tmp_path / "tt.sqlite"
    not_yet = pitr(db, "checkout", states[0][0])
    assert not_yet.returncode == 1 and "initial snapshot not completed" in not_yet.stderr
    synced = pitr(db, "sync", endpoint=endpoint, bucket=bucket)
    assert synced.returncode == 0, synced.stderr
    info = pitr(db, "info")
    assert info.stdout.strip() == "Current versionstamp: 00000000000000000000"
    listed = pitr(db, "list").stdout.strip().splitlines()
    stamps = [line.split("\t")[0] for line in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert {s for s, _ in states} <= set(stamps)
    assert all(re_time(line.split("\t")[1]) for line in listed)
    for stamp, expected in [states[1], states[0], states[2], states[0]]:
        done = pitr(db, "checkout", stamp)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"Snapshot is now at versionstamp {stamp}"
        assert kv_rows(db) == expected
    bad = pitr(db, "checkout", "xyz")
    assert bad.returncode == 1 and "invalid versionstamp xyz" in bad.stderr
    bad_time = pitr(db, "list", "--start", "soon")
    assert bad_time.returncode == 1 and 'invalid start time "soon"' in bad_time.stderr


def re_time(text: str) -> bool:
    import re

    return re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text) is not None


@pytest.mark.slow
def test_readyz_waits_for_the_bootstrap(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    # No primary has shipped anything yet: the replica cannot bootstrap.
    replica = replica_process(tmp_path, endpoint, bucket, "t" * 16).start()
    primary = None
    try:
        resp = httpx.get(replica.url + "/readyz")
        assert resp.status_code == 503 and "bootstrap" in resp.text
        data = httpx.post(replica.url + "/v2/snapshot_read", content=b"", headers={
            "authorization": "Bearer " + "t" * 16, "x-denokv-version": "3",
            "x-denokv-database-id": "00000000-0000-0000-0000-000000000000"})  # fmt: skip
        assert data.status_code == 503 and "still loading" in data.text
        primary = start_primary(tmp_path, endpoint, bucket)
        wait_ready(replica)
    finally:
        replica.stop()
        if primary is not None:
            primary.stop()


@pytest.mark.deno
def test_a_replica_with_a_wrong_primary_token_answers_a_clear_4xx_and_logs_it_once(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    from denokv.client.errors import KvConnectError
    from tests.support.deno import run_deno

    endpoint, bucket = s3_bucket
    primary = start_primary(tmp_path, endpoint, bucket)
    wrong = ["--primary-url", primary.url, "--primary-access-token", "not-the-primary-token"]
    replica = replica_process(tmp_path, endpoint, bucket, primary.token, *wrong)
    replica.start()
    try:
        wait_ready(replica)
        # Deno retries 5xx forever: with a 5xx this would never return.
        out = run_deno("errors.ts", replica.url, "set", token=primary.token, timeout=60)
        assert "status=403" in out["set"] and "refused the replica" in out["set"], out

        async def python_client() -> list[int]:
            statuses = []
            async with denokv.open_kv(replica.url, access_token=primary.token) as kv:
                for call in (lambda: kv.set(["x"], 1), lambda: kv.get(["x"])) * 3:
                    with pytest.raises(KvConnectError) as caught:
                        await call()
                    assert "--primary-access-token" in caught.value.body
                    statuses.append(caught.value.status)
            return statuses

        assert asyncio.run(python_client()) == [403] * 6
        assert replica.logs().count("refused this replica") == 1, replica.logs()[-3000:]
    finally:
        replica.stop()
        primary.stop()
