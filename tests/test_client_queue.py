"""Queues on the embedded backend: delivery, retries on the backoff schedule, dead letters,
recovery of messages whose delivery was cut short."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import denokv
from denokv.client.errors import KvQueueError
from tests.support.processes import ServerProcess


async def run_listener(
    kv: denokv.Kv,
    handler: Callable[[Any], Awaitable[None] | None],
    until: Callable[[], bool],
    timeout: float = 10,
) -> None:
    task = asyncio.create_task(kv.listen_queue(handler))
    try:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "queue condition not reached in time"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.02)
    finally:
        task.cancel()


async def test_messages_are_delivered_in_due_order(tmp_path: Path) -> None:
    async with denokv.open_kv(tmp_path / "kv.sqlite") as kv:
        got: list[object] = []
        await kv.enqueue({"n": 2}, delay=200)
        await kv.enqueue({"n": 1})
        await run_listener(kv, got.append, lambda: len(got) == 2)
        assert got == [{"n": 1}, {"n": 2}]


async def test_a_failing_handler_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    async with denokv.open_kv(tmp_path / "kv.sqlite") as kv:
        attempts: list[float] = []

        def handler(msg: object) -> None:
            attempts.append(time.monotonic())
            raise RuntimeError("handler failed")

        await kv.enqueue("payload", keys_if_undelivered=[["dead", 1]], backoff_schedule=[50, 150])

        async def dead_letter_written() -> bool:
            return bool((await kv.get(["dead", 1])).value == "payload")

        done = asyncio.Event()

        async def poll() -> None:
            while not await dead_letter_written():
                await asyncio.sleep(0.02)
            done.set()

        poller = asyncio.create_task(poll())
        await run_listener(kv, handler, done.is_set)
        poller.cancel()
        assert len(attempts) == 3  # first delivery and two retries
        assert attempts[1] - attempts[0] >= 0.04
        assert attempts[2] - attempts[1] >= 0.14
    conn = sqlite3.connect(tmp_path / "kv.sqlite")
    assert conn.execute("select count(*) from queue").fetchone() == (0,)
    assert conn.execute("select count(*) from queue_running").fetchone() == (0,)


async def test_messages_in_flight_when_the_process_died_are_delivered_again(
    tmp_path: Path,
) -> None:
    db = tmp_path / "kv.sqlite"
    async with denokv.open_kv(db) as kv:
        await kv.enqueue("survivor")
    # Simulate a crash mid-delivery: the message sits in queue_running, lease expired.
    conn = sqlite3.connect(db)
    conn.execute(
        "insert into queue_running select ts - 10000, id, data, backoff_schedule, "
        "keys_if_undelivered from queue"
    )
    conn.execute("delete from queue")
    conn.commit()
    conn.close()
    async with denokv.open_kv(db) as kv:
        got: list[object] = []
        await run_listener(kv, got.append, lambda: bool(got))
        assert got == ["survivor"]


@pytest.mark.slow
async def test_a_slow_handler_is_not_delivered_twice(tmp_path: Path) -> None:
    async with denokv.open_kv(tmp_path / "kv.sqlite") as kv:
        calls: list[object] = []

        async def slow(msg: object) -> None:
            calls.append(msg)
            await asyncio.sleep(6.5)  # longer than the 5 s lease

        await kv.enqueue("once")
        finished = time.monotonic() + 8
        await run_listener(kv, slow, lambda: time.monotonic() > finished, timeout=12)
        assert calls == ["once"]


async def test_listen_queue_is_refused_over_kv_connect(server: ServerProcess) -> None:
    async with denokv.open_kv(server.url, access_token=server.token) as kv:
        with pytest.raises(KvQueueError, match="not possible over KV Connect"):
            await kv.listen_queue(print)
        assert (await kv.enqueue("stored, never delivered")).ok
