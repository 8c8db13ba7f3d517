"""Helpers shared by the backup tests (real servers, the real CLI, moto).

The tests that use them start `denokv serve` primaries and replicas as child
processes and run `python -m cli.main ... pitr ...`, so the same test runs
against any version of the code checked out beside it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import denokv
from tests.support.dbfile import backlog
from tests.support.paths import ROOT
from tests.support.processes import ServerProcess
from tests.support.s3 import list_keys, s3_args, s3_client, s3_env
from tests.support.waiting import wait_until

PREFIX = "proofs/kv/"


def primary(
    tmp_path: Path, endpoint: str, bucket: str, *extra: str,
    name: str = "primary.sqlite", env: dict[str, str] | None = None, prefix: str = PREFIX,
) -> ServerProcess:  # fmt: skip
    """A primary shipping to `prefix` every 200 ms (not started)."""
    return ServerProcess(
        tmp_path / name,
        extra_args=[*s3_args(endpoint, bucket, prefix), "--s3-sync-interval", "200ms", *extra],
        env={**s3_env(), **(env or {})},
    )


def replica(
    tmp_path: Path, endpoint: str, bucket: str, token: str, *extra: str,
    name: str = "replica.sqlite", env: dict[str, str] | None = None,
) -> ServerProcess:  # fmt: skip
    """A read replica polling `PREFIX` every 200 ms (not started)."""
    return ServerProcess(
        tmp_path / name,
        token=token,
        extra_args=[*s3_args(endpoint, bucket, PREFIX), "--sync-from-s3",
                    "--s3-poll-interval", "200ms", *extra],
        env={**s3_env(), **(env or {})},
    )  # fmt: skip


def run_cli(
    db: Path, *args: str, timeout: float = 180, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m cli.main --sqlite-path DB ARGS...` from the checkout under test."""
    cmd = [sys.executable, "-m", "cli.main", "--sqlite-path", str(db), *args]
    return subprocess.run(cmd, cwd=ROOT, env=s3_env(), capture_output=True, text=True,
                          timeout=timeout, check=False, preexec_fn=preexec_fn)  # fmt: skip


def restore(
    tmp_path: Path, endpoint: str, bucket: str, at: str | None, name: str, *extra: str,
    prefix: str = PREFIX,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`pitr restore` of `prefix` into tmp_path/name, at `at` (None: the latest commit)."""
    point = ["--at", at] if at is not None else []
    return run_cli(tmp_path / name, "pitr", "restore", *s3_args(endpoint, bucket, prefix),
                   *extra, *point, timeout=120)  # fmt: skip


def wait_shipped(db: Path, timeout: float = 60) -> None:
    wait_until(lambda: backlog(db) == 0, timeout, "the primary shipped its redo backlog")


def complete_generations(endpoint: str, bucket: str, prefix: str = PREFIX) -> list[str]:
    """Names of the generations that have a differential, oldest first."""
    keys = list_keys(endpoint, bucket, prefix + "generations/")
    return sorted(k.split("/")[-2] for k in keys if k.endswith("/differential"))


async def _write_phase(url: str, token: str, phase: int, count: int) -> None:
    async with denokv.open_kv(url, access_token=token) as kv:
        for i in range(count):
            await kv.set(["item", phase, i], {"phase": phase, "i": i})
        await kv.delete(["item", phase, 0])
        if phase:
            await kv.delete(["item", phase - 1, 1])
        await kv.atomic().sum(["total"], count).commit()


def write_phase(srv: ServerProcess, phase: int, count: int = 10) -> None:
    """A few sets, deletes and a sum through KV Connect (the Python client)."""
    asyncio.run(_write_phase(srv.url, srv.token, phase, count))


async def workload(url: str, token: str, phase: int) -> None:
    """The backup tests' mix: sets, deletes, sums, an expiry, a versionstamped key, bytes."""
    async with denokv.open_kv(url, access_token=token) as kv:
        for i in range(20):
            await kv.set(["user", phase, i], {"phase": phase, "i": i, "pad": "x" * i})
        await kv.delete(["user", phase, 3])
        await kv.atomic().sum(["counter"], 7).sum(["counter", phase], phase + 1).commit()
        await kv.set(["expiring", phase], "long-lived expiry", expire_in=3_600_000)
        await kv.atomic().set(["stamped", kv.commit_versionstamp()], phase).commit()
        await kv.set(["bytes", phase], bytes(range(phase, phase + 5)))
        if phase:
            await kv.delete(["user", phase - 1, 5])


def empty_bucket(endpoint: str, bucket: str) -> None:
    """Delete every object (moto keeps them in memory for the whole session)."""
    client = s3_client(endpoint)
    keys = list_keys(endpoint, bucket)
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
