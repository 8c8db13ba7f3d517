"""A randomized history: whatever happens to the primary and to S3, every point restores.

One seeded run of random atomic writes (sets, deletes, sums, checks that hold
or fail, enqueues) through a real primary, while it is killed with SIGKILL and
restarted, S3 answers 503 or drops connections for a while, generations rotate
every couple of seconds, and a second primary tries to ship to the same prefix.
Afterwards:

- every recorded point restores exactly (keys, values, versionstamps, queue);
- the latest restore equals the primary;
- a replica started from nothing converges to it exactly;
- a segment deleted from the middle of a generation makes restore fail.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import denokv
from denokv.keys import KeyPart
from tests.support.dbfile import backlog, point_of
from tests.support.fault_proxy import FaultProxy
from tests.support.paths import ROOT
from tests.support.processes import ServerProcess
from tests.support.s3 import get_object as s3_object
from tests.support.s3 import list_keys, s3_args, s3_client, s3_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.s3, pytest.mark.slow]

PREFIX = "random/"
SEED = int(os.environ.get("DENOKV_HISTORY_SEED", "20261201"))
ROUNDS = 14

State = tuple[list[tuple[bytes, bytes, int, int]], list[tuple[int, str, bytes, str]]]


def state(db: Path) -> State:
    """Every kv row (key, value, encoding, version) and queued message of a file."""
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        kv = conn.execute("select k, v, v_encoding, version from kv order by k").fetchall()
        queue = conn.execute(
            "select ts, id, data, backoff_schedule from queue order by ts, id"
        ).fetchall()
        return kv, queue
    finally:
        conn.close()


async def random_round(url: str, token: str, rng: random.Random, round_: int) -> None:
    async with denokv.open_kv(url, access_token=token) as kv:
        for step in range(rng.randint(8, 16)):
            op = kv.atomic()
            key: list[KeyPart] = ["k", rng.randrange(30)]
            choice = rng.random()
            if choice < 0.35:
                op.set(key, {"round": round_, "step": step, "pad": "x" * rng.randrange(40)})
            elif choice < 0.5:
                op.delete(key)
            elif choice < 0.65:
                op.sum(["n", rng.randrange(4)], rng.randrange(1, 1000))
            elif choice < 0.8:
                entry = await kv.get(key)
                # A check that holds, or (a third of the time) one that cannot.
                held = rng.random() < 0.67
                versionstamp = entry.versionstamp if held else "0" * 19 + "1"
                op.check((key, versionstamp)).set(key, f"checked {round_}/{step}")
            else:
                op.enqueue({"round": round_, "step": step}, delay=rng.randrange(60_000))
            await op.commit()


def restore(db: Path, endpoint: str, bucket: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cli.main", "--sqlite-path", str(db), "pitr", "restore",
           *s3_args(endpoint, bucket, PREFIX), *extra]  # fmt: skip
    return subprocess.run(
        cmd, cwd=ROOT, env=s3_env(), capture_output=True, text=True, timeout=120, check=False
    )


def test_random_history_with_crashes_faults_rotations_and_an_intruder(
    tmp_path: Path, fault_proxy: tuple[FaultProxy, str, str]
) -> None:
    proxy, proxied, bucket = fault_proxy
    direct = proxy.upstream if hasattr(proxy, "upstream") else proxied
    rng = random.Random(SEED)
    db = tmp_path / "primary.sqlite"
    args = [*s3_args(proxied, bucket, PREFIX), "--s3-sync-interval", "200ms",
            "--s3-snapshot-interval", "2s", "--s3-lease-ttl", "4s"]  # fmt: skip
    primary = ServerProcess(db, extra_args=args, env=s3_env()).start()
    points: list[tuple[str, State]] = []
    intruder: ServerProcess | None = None
    try:
        for round_ in range(ROUNDS):
            if round_ in (3, 9):
                proxy.error_503()
            elif round_ in (5, 11):
                proxy.drop()
            else:
                proxy.passthrough()
            asyncio.run(random_round(primary.url, primary.token, rng, round_))
            points.append((point_of(db), state(db)))
            if round_ == 6:
                primary.stop(sig=signal.SIGKILL)
                primary.start()
            if round_ == 7:
                intruder = ServerProcess(
                    tmp_path / "intruder.sqlite", extra_args=args, env=s3_env()
                ).start()
                asyncio.run(random_round(intruder.url, intruder.token, rng, 100))
            if round_ == 10 and intruder is not None:
                text = httpx.get(intruder.url + "/readyz").text
                assert "another primary holds the backup lease" in text, text
                intruder.stop()
                intruder = None
            time.sleep(rng.uniform(0.1, 0.6))
        proxy.passthrough()
        wait_until(lambda: backlog(db) == 0, 60, "the primary shipped everything")
        final = state(db)
    finally:
        proxy.passthrough()
        if intruder is not None:
            intruder.stop()
        primary.stop()

    generations = {k.split("/")[2] for k in list_keys(proxied, bucket, PREFIX + "generations/")}
    assert len(generations) >= 3, "the run did not rotate"
    for i, (point, expected) in enumerate(points):
        out = tmp_path / f"point-{i}.sqlite"
        done = restore(out, proxied, bucket, "--at", point)
        assert done.returncode == 0, done.stderr
        assert state(out) == expected, f"point {i} ({point}) does not restore exactly"
    latest = tmp_path / "latest.sqlite"
    assert restore(latest, proxied, bucket).returncode == 0
    assert state(latest) == final

    replica = ServerProcess(
        tmp_path / "replica.sqlite",
        extra_args=[*s3_args(proxied, bucket, PREFIX), "--sync-from-s3",
                    "--s3-poll-interval", "200ms"],
        env=s3_env(),
    ).start()  # fmt: skip
    try:
        wait_until(lambda: _same(replica.db_path, final), 60, "the replica converging")
    finally:
        replica.stop()

    # A segment missing from the middle of a generation: restore refuses.
    gap, point = _gap_and_point(proxied, bucket)
    s3_client(direct).delete_object(Bucket=bucket, Key=gap)
    broken = restore(tmp_path / "broken.sqlite", proxied, bucket, "--at", point)
    assert broken.returncode != 0 and "missing" in broken.stderr, broken.stderr + broken.stdout


def _gap_and_point(endpoint: str, bucket: str) -> tuple[str, str]:
    """A segment to delete, and a point after it that only its generation covers."""
    keys = list_keys(endpoint, bucket, PREFIX + "generations/")
    starts = sorted(
        (s3_object(endpoint, bucket, k).decode(), k.split("/")[2])
        for k in keys
        if k.endswith("/differential")
    )
    by_generation: dict[str, list[str]] = {}
    for key in sorted(k for k in keys if "/logs/" in k):
        by_generation.setdefault(key.split("/")[2], []).append(key)
    for i, (_, name) in enumerate(starts):
        segments = by_generation.get(name, [])
        successor = starts[i + 1][0] if i + 1 < len(starts) else "f" * 20
        later = [_segment_range(k)[0] for k in segments[2:]]
        later = [p for p in later if p < successor]
        if later:
            return segments[1], later[-1]
    raise AssertionError("no generation has a segment after a deletable one")


def _same(db: Path, expected: State) -> bool:
    try:
        return state(db) == expected
    except sqlite3.Error:
        return False


def _segment_range(key: str) -> tuple[str, str]:
    """(first, last) 10-byte versionstamps, in hex, of a log segment's object name."""
    fields = key.rsplit("/", 1)[1].removesuffix(".bin").split("_")
    return fields[2][:20], fields[3][:20]
