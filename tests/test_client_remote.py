"""The KV Connect side of the client: errors, retries and the sync facade."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import denokv
from denokv.client.errors import KvClosedError, KvMetadataError, KvUnavailableError
from denokv.client.remote import RetryPolicy
from tests.support.processes import ServerProcess


async def test_a_wrong_token_is_a_clear_error(server: ServerProcess) -> None:
    async with denokv.open_kv(server.url, access_token="x" * 20) as kv:
        expected = r"Failed to fetch metadata: Invalid access token\."
        with pytest.raises(KvMetadataError, match=expected):
            await kv.get(["a"])


@pytest.mark.slow
async def test_calls_survive_a_server_restart(server: ServerProcess) -> None:
    async with denokv.open_kv(server.url, access_token=server.token) as kv:
        await kv.set(["before"], 1)
        server.stop()
        restarter = threading.Timer(1.5, server.start)
        restarter.start()
        try:
            started = time.monotonic()
            res = await kv.set(["during"], 2)  # retried until the server is back
            assert res.ok
            assert time.monotonic() - started >= 1.0
            assert (await kv.get(["before"])).value == 1
        finally:
            restarter.join()


async def test_retries_stop_at_the_deadline(server: ServerProcess) -> None:
    url = server.url
    server.stop()
    kv = denokv.open_kv(url, access_token=server.token, retry=RetryPolicy(deadline_s=1.0))
    async with kv:
        started = time.monotonic()
        with pytest.raises(KvUnavailableError, match="did not answer within 1 s"):
            await kv.get(["a"])
        assert time.monotonic() - started < 5


async def test_a_remote_watch_sees_a_change_made_elsewhere(server: ServerProcess) -> None:
    async with (
        denokv.open_kv(server.url, access_token=server.token) as watcher,
        denokv.open_kv(server.url, access_token=server.token) as writer,
    ):
        stream = watcher.watch([["w"]])
        first = await asyncio.wait_for(stream.__anext__(), 10)
        assert first[0].value is None
        await writer.set(["w"], "changed")
        second = await asyncio.wait_for(stream.__anext__(), 10)
        assert second[0].value == "changed"
        await stream.aclose()


def test_the_sync_facade_after_close_says_the_database_is_closed(tmp_path: Path) -> None:
    kv = denokv.open_kv_sync(tmp_path / "kv.sqlite")
    kv.set(["a"], 1)
    kv.close()
    kv.close()  # again: nothing happens
    with pytest.raises(KvClosedError, match="the database is closed"):
        kv.get(["a"])
    with pytest.raises(KvClosedError):
        kv.set(["a"], 2)
    with pytest.raises(KvClosedError):
        next(iter(kv.list(prefix=["a"])))


def test_sync_facade(server: ServerProcess) -> None:
    with denokv.open_kv_sync(server.url, access_token=server.token) as kv:
        assert kv.set(["s", 1], "one").ok
        entry = kv.get(["s", 1])
        assert entry.value == "one"
        res = kv.atomic().check(entry).set(["s", 2], "two").sum(["s", "n"], 3).commit()
        assert res.ok
        # Strings sort before ints, so ["s", "n"] comes first.
        assert [e.value for e in kv.list(prefix=["s"])] == [denokv.KvU64(3), "one", "two"]
        watch = kv.watch([["s", 1]])
        assert next(watch)[0].value == "one"
        watch.close()
