"""Enqueued messages are in the backup (issue 10, item 9).

Before, only key changes were captured: a restore came back with an empty
queue (the pending messages were lost) and a replica's queue tables stayed
empty. Now queue changes ride in the log segments and the snapshot, a
restored file delivers the same messages, and a replica holds the primary's
queue rows without delivering them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import denokv
from tests.support.backup_proofs import (
    PREFIX,
    complete_generations,
    primary,
    replica,
    run_cli,
    wait_shipped,
)
from tests.support.dbfile import query
from tests.support.processes import ServerProcess
from tests.support.s3 import s3_args
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.s3, pytest.mark.slow]

QUEUE_ROWS = "select ts, id, data, backoff_schedule, keys_if_undelivered from queue order by id"


def payload(batch: str, i: int) -> dict[str, Any]:
    return {"batch": batch, "n": i, "text": f"message {i} of {batch}", "items": list(range(i))}


async def enqueue(url: str, token: str, batch: str, count: int) -> None:
    async with denokv.open_kv(url, access_token=token) as kv:
        for i in range(count):
            if i % 3 == 0:  # with a key change in the same commit
                op = kv.atomic().set(["sent", batch, i], True).enqueue(payload(batch, i))
                assert (await op.commit()).ok
            else:
                await kv.enqueue(
                    payload(batch, i),
                    keys_if_undelivered=[["undelivered", batch, i]],
                    backoff_schedule=[100, 200],
                )


async def deliver_all(path: Path, expected: int, timeout: float = 20) -> list[Any]:
    """Open `path` with the embedded client and take messages until `expected` came."""
    got: list[Any] = []
    async with denokv.open_kv(path) as kv:
        task = asyncio.create_task(kv.listen_queue(got.append))
        try:
            deadline = time.monotonic() + timeout
            while len(got) < expected and time.monotonic() < deadline:
                assert not task.done(), task.exception()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything beyond what was expected shows up too
        finally:
            task.cancel()
    return got


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz").status_code == 200
    except httpx.HTTPError:
        return False


EXPECTED = [payload("before", i) for i in range(6)] + [payload("after", i) for i in range(5)]


def rotate_between_batches(
    srv: ServerProcess, endpoint: str, bucket: str, in_between: Callable[[], None] = lambda: None
) -> list[tuple[Any, ...]]:
    """Enqueue a batch, let the primary rotate (the batch lands in a snapshot), enqueue
    another (in the log); returns the primary's queue rows once everything shipped."""
    wait_until(lambda: len(complete_generations(endpoint, bucket)) >= 1, 30, "a generation")
    asyncio.run(enqueue(srv.url, srv.token, "before", 6))
    wait_shipped(srv.db_path)
    in_between()
    seen = len(complete_generations(endpoint, bucket))
    wait_until(lambda: len(complete_generations(endpoint, bucket)) > seen, 30, "a rotation")
    asyncio.run(enqueue(srv.url, srv.token, "after", 5))
    wait_shipped(srv.db_path)
    rows = query(srv.db_path, QUEUE_ROWS)
    assert len(rows) == len(EXPECTED)
    return rows


def by_batch(p: dict[str, Any]) -> tuple[str, int]:
    return p["batch"], p["n"]


def test_a_restored_file_delivers_the_pending_messages(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket, "--s3-snapshot-interval", "3s").start()
    try:
        on_primary = rotate_between_batches(srv, endpoint, bucket)
    finally:
        assert srv.stop() == 0
    restored = tmp_path / "restored.sqlite"
    done = run_cli(restored, "pitr", "restore", *s3_args(endpoint, bucket, PREFIX))
    assert done.returncode == 0, done.stderr
    assert query(restored, QUEUE_ROWS) == on_primary
    delivered = asyncio.run(deliver_all(restored, len(on_primary)))
    assert sorted(delivered, key=by_batch) == sorted(EXPECTED, key=by_batch)
    assert query(restored, "select count(*) from queue") == [(0,)]


def test_a_replica_holds_the_queue_and_delivers_nothing(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket, "--s3-snapshot-interval", "3s").start()
    follower = replica(tmp_path, endpoint, bucket, srv.token)

    def start_replica() -> None:  # it follows the log from here on, into the next generation
        follower.start()
        wait_until(lambda: ready(follower.url), 30, "replica ready")

    try:
        on_primary = rotate_between_batches(srv, endpoint, bucket, start_replica)
        wait_until(lambda: query(follower.db_path, QUEUE_ROWS) == on_primary, 30,
                   "the replica holds the primary's queue rows")  # fmt: skip
        time.sleep(1.0)  # a few more polls: a replica never delivers
        assert query(follower.db_path, QUEUE_ROWS) == on_primary
        assert query(follower.db_path, "select count(*) from queue_running") == [(0,)]
    finally:
        if follower.proc is not None:
            follower.stop()
        assert srv.stop() == 0
