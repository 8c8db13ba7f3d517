"""Restore and a serving replica stay within bounded memory and disk (issue 10, item 10).

Before, `pitr restore` downloaded every snapshot object of a generation at
once and held every log entry in a dict before replaying, so its memory grew
with the backup; and a serving replica kept an undo entry for every commit it
ever applied, never trimmed.

The restore here runs as a real CLI child under a data-size limit
(RLIMIT_DATA) well below the size of the backup: a restore that holds the
backup in memory gets MemoryError and exits non-zero.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import time
from pathlib import Path

import pytest

import denokv
from tests.support.backup_proofs import (
    PREFIX,
    complete_generations,
    empty_bucket,
    primary,
    replica,
    run_cli,
    wait_shipped,
)
from tests.support.dbfile import query
from tests.support.fault_proxy import FaultProxy
from tests.support.s3 import s3_args, s3_client
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.s3, pytest.mark.slow]

VALUE_BYTES = 60_000  # below the 64 KiB value limit, incompressible
PER_WRITE = 12  # 12 x 60 KB stays below the 819,200 bytes of one atomic write
SNAPSHOT_KEYS = 3_600  # ~216 MB in the first generation's snapshot
LOG_KEYS = 720  # ~43 MB more in its log, shipped as it is written
OUTAGE_KEYS = 1_440  # ~86 MB more written while S3 cannot be reached
DATA_LIMIT = 256 * 1024 * 1024  # RLIMIT_DATA of the restore; the backup is ~345 MB


def value(i: int, round_: int) -> bytes:
    seed = hashlib.sha256(b"%d/%d" % (i, round_)).digest()
    return seed + os.urandom(VALUE_BYTES - len(seed))


async def fill(path_or_url: str | Path, token: str | None, keys: range, round_: int) -> None:
    async with denokv.open_kv(path_or_url, access_token=token) as kv:
        for start in range(keys.start, keys.stop, PER_WRITE):
            op = kv.atomic()
            for i in range(start, min(start + PER_WRITE, keys.stop)):
                op.set(["blob", i], value(i, round_))
            assert (await op.commit()).ok


def digest(db: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    rows = query(db, "select k, v, v_encoding from kv order by k")
    for k, v, enc in rows:
        h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v + bytes([enc]))
    return len(rows), h.hexdigest()


def backup_bytes(endpoint: str, bucket: str) -> int:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(obj["Size"] for page in pages for obj in page.get("Contents", ()))


def limit_data() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))


def test_restore_of_a_backup_larger_than_its_memory_limit(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: tuple[FaultProxy, str, str]
) -> None:
    proxy, proxied, bucket = fault_proxy
    endpoint = s3_bucket[0]
    srv = primary(tmp_path, proxied, bucket)
    asyncio.run(fill(srv.db_path, None, range(SNAPSHOT_KEYS), 0))
    srv.start()
    try:
        wait_until(lambda: len(complete_generations(endpoint, bucket)) == 1, 120, "a snapshot")
        # Overwrites of old keys and new keys, all of it in the generation's log: first
        # shipped as it comes, then piling up on disk while S3 is away.
        top = SNAPSHOT_KEYS + LOG_KEYS // 2
        asyncio.run(fill(srv.url, srv.token, range(SNAPSHOT_KEYS - LOG_KEYS // 2, top), 1))
        wait_shipped(srv.db_path)
        proxy.error_503()
        asyncio.run(
            fill(srv.url, srv.token, range(top - OUTAGE_KEYS // 2, top + OUTAGE_KEYS // 2), 2)
        )
        proxy.passthrough()
        wait_shipped(srv.db_path, timeout=180)
    finally:
        assert srv.stop() == 0
    try:
        expected = digest(srv.db_path)
        stored = backup_bytes(endpoint, bucket)
        assert stored > 1.25 * DATA_LIMIT, f"the backup ({stored} B) must dwarf the limit"
        out = tmp_path / "restored.sqlite"
        done = run_cli(out, "pitr", "restore", *s3_args(endpoint, bucket, PREFIX), timeout=600,
                       preexec_fn=limit_data)  # fmt: skip
        assert done.returncode == 0, f"restore, data limit {DATA_LIMIT} B:\n{done.stderr[-3000:]}"
        assert digest(out) == expected
    finally:
        empty_bucket(endpoint, bucket)


# -- the undo log of a serving replica ------------------------------------------------------


UNDO_WINDOW_S = 2.0
WRITE_FOR_S = 10.0


async def keep_writing(url: str, token: str, seconds: float) -> int:
    """One small commit after another for `seconds` (bounded); returns how many."""
    count = 0
    async with denokv.open_kv(url, access_token=token) as kv:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and count < 100_000:
            await kv.set(["tick", count % 50], {"n": count})
            count += 1
            await asyncio.sleep(0.01)
    return count


def test_a_serving_replica_trims_its_undo_log_to_the_window(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket).start()
    # Set through the environment (DENO_KV_REPLICA_UNDO_WINDOW, documented beside
    # --replica-undo-window), so the code before the flag existed starts the same way.
    follower = replica(tmp_path, endpoint, bucket, srv.token,
                       env={"DENO_KV_REPLICA_UNDO_WINDOW": f"{UNDO_WINDOW_S}s"})  # fmt: skip
    try:
        wait_until(lambda: len(complete_generations(endpoint, bucket)) == 1, 30, "a generation")
        follower.start()
        started = time.time()
        commits = asyncio.run(keep_writing(srv.url, srv.token, WRITE_FOR_S))
        wait_shipped(srv.db_path)
        wait_until(lambda: query(follower.db_path, "select k, v from kv order by k")
                   == query(srv.db_path, "select k, v from kv order by k"), 30,
                   "the replica caught up")  # fmt: skip
        time.sleep(1.0)  # a poll or two after the last segment
        undo_sql = "select count(*), min(timestamp_ms) from denokv_tt_undo"
        undo, oldest = query(follower.db_path, undo_sql)[0]
    finally:
        follower.stop()
        assert srv.stop() == 0
    assert commits > 200, f"only {commits} commits in {WRITE_FOR_S} s"
    # Every commit wrote one undo entry; a window of a fifth of the run keeps a fraction.
    assert undo < commits / 2, f"{undo} undo entries kept for {commits} commits"
    assert oldest is None or oldest / 1000 > started + WRITE_FOR_S / 2
