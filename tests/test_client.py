"""The Python client's behaviour, the same on every backend: a server (KV Connect),
a local file and memory."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import denokv
from denokv.client.errors import KvValidationError
from tests.support.processes import ServerProcess

_ns = itertools.count()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("client") / "kv.sqlite").start()
    yield srv
    srv.stop()


@pytest.fixture(params=["remote", "remote-h2", "file", "memory"])
async def kv(
    request: pytest.FixtureRequest, tmp_path: Path, shared_server: ServerProcess
) -> AsyncIterator[denokv.Kv]:
    if request.param.startswith("remote"):
        db = denokv.open_kv(
            shared_server.url,
            access_token=shared_server.token,
            http2=request.param == "remote-h2",
        )
    elif request.param == "file":
        db = denokv.open_kv(tmp_path / "kv.sqlite")
    else:
        db = denokv.open_kv(":memory:")
    async with db:
        yield db


@pytest.fixture
def ns() -> str:
    """A key prefix of each test's own, so tests can share one server."""
    return f"t{next(_ns)}"


async def test_set_get_delete(kv: denokv.Kv, ns: str) -> None:
    res = await kv.set([ns, "ada"], {"name": "Ada", "born": 1815})
    assert res.ok and res.versionstamp is not None and len(res.versionstamp) == 20
    entry = await kv.get([ns, "ada"])
    assert entry.key == (ns, "ada")
    assert entry.value == {"name": "Ada", "born": 1815}
    assert entry.versionstamp == res.versionstamp
    await kv.delete([ns, "ada"])
    missing = await kv.get([ns, "ada"])
    assert (missing.value, missing.versionstamp) == (None, None)


async def test_values_round_trip(kv: denokv.Kv, ns: str) -> None:
    values = {
        "dict": {"a": [1, 2, {"b": None}], "c": "ü"},
        "list": [1, "two", 3.5],
        "bigint": 2**70,
        "float": -0.5,
        "bytes": b"\x00\x01",
        "none": None,
        "date": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "u64": denokv.KvU64(2**64 - 1),
        "bool": True,
    }
    for name, value in values.items():
        await kv.set([ns, name], value)
    got = {name: (await kv.get([ns, name])).value for name in values}
    assert got == values


async def test_get_many_and_its_limit(kv: denokv.Kv, ns: str) -> None:
    await kv.set([ns, 1], "one")
    entries = await kv.get_many([[ns, 1], [ns, 2]])
    assert [e.value for e in entries] == ["one", None]
    with pytest.raises(KvValidationError, match=r"Too many ranges \(max 10\)"):
        await kv.get_many([[ns, i] for i in range(11)])


async def test_list_selectors(kv: denokv.Kv, ns: str) -> None:
    op = kv.atomic()
    for i in range(30):
        op.set([ns, i], i)
    await op.commit()
    await kv.set([ns], "the prefix itself is never listed")

    async def values(**kw: Any) -> list[object]:
        return [e.value async for e in kv.list(**kw)]

    assert await values(prefix=[ns]) == list(range(30))
    assert await values(prefix=[ns], limit=3, reverse=True) == [29, 28, 27]
    assert await values(prefix=[ns], start=[ns, 27]) == [27, 28, 29]
    assert await values(prefix=[ns], end=[ns, 2]) == [0, 1]
    assert await values(start=[ns, 5], end=[ns, 8]) == [5, 6, 7]
    assert await values(prefix=[ns], batch_size=4) == list(range(30))
    with pytest.raises(KvValidationError, match="Start key is not in the keyspace"):
        kv.list(prefix=[ns], start=["other"])


async def test_cursor_resumes_exactly_across_batches(kv: denokv.Kv, ns: str) -> None:
    op = kv.atomic()
    for i in range(25):
        op.set([ns, i], i)
    await op.commit()
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        it = kv.list(prefix=[ns], limit=7, batch_size=3, cursor=cursor)
        page = [e.value async for e in it]
        seen += page
        cursor = it.cursor
        if len(page) < 7:
            break
    assert seen == list(range(25))
    rev = kv.list(prefix=[ns], limit=5, reverse=True)
    assert [e.value async for e in rev] == [24, 23, 22, 21, 20]
    more = kv.list(prefix=[ns], limit=3, reverse=True, cursor=rev.cursor)
    assert [e.value async for e in more] == [19, 18, 17]


async def test_atomic_checks(kv: denokv.Kv, ns: str) -> None:
    entry = await kv.get([ns, "x"])
    first = await kv.atomic().check(entry).set([ns, "x"], 1).commit()
    assert first.ok
    stale = await kv.atomic().check(entry).set([ns, "x"], 2).commit()
    assert not stale.ok and stale.versionstamp is None
    assert stale.failed_checks == (0,)
    assert (await kv.get([ns, "x"])).value == 1


async def test_u64_sum_min_max(kv: denokv.Kv, ns: str) -> None:
    await kv.atomic().sum([ns, "n"], 5).sum([ns, "n"], denokv.KvU64(7)).commit()
    await kv.atomic().min([ns, "lo"], 9).min([ns, "lo"], 4).max([ns, "hi"], 4).max([ns, "hi"], 9)\
        .commit()  # fmt: skip
    got = await kv.get_many([[ns, "n"], [ns, "lo"], [ns, "hi"]])
    assert [e.value for e in got] == [denokv.KvU64(12), denokv.KvU64(4), denokv.KvU64(9)]


async def test_commit_versionstamp_key(kv: denokv.Kv, ns: str) -> None:
    res = await kv.atomic().set([ns, kv.commit_versionstamp()], "stamped").commit()
    [entry] = [e async for e in kv.list(prefix=[ns])]
    assert entry.key == (ns, res.versionstamp)
    assert entry.value == "stamped"


async def test_expire_in(kv: denokv.Kv, ns: str) -> None:
    await kv.set([ns, "tmp"], "soon gone", expire_in=300)
    assert (await kv.get([ns, "tmp"])).value == "soon gone"
    await asyncio.sleep(0.6)
    assert (await kv.get([ns, "tmp"])).value is None


async def test_watch_sees_changes(kv: denokv.Kv, ns: str) -> None:
    await kv.set([ns, "w"], "v0")
    stream = kv.watch([[ns, "w"], [ns, "other"]])
    states: list[list[object]] = []

    async def collect() -> None:
        async for entries in stream:
            states.append([e.value for e in entries])
            if len(states) == 3:
                return

    task = asyncio.create_task(collect())
    while not states:
        await asyncio.sleep(0.02)
    await kv.set([ns, "w"], "v1")
    await asyncio.sleep(0.1)
    await kv.delete([ns, "w"])
    await asyncio.wait_for(task, 10)
    assert states == [["v0", None], ["v1", None], [None, None]]


async def test_client_side_validation(kv: denokv.Kv, ns: str) -> None:
    with pytest.raises(KvValidationError, match="key cannot be empty"):
        await kv.set([], 1)
    with pytest.raises(KvValidationError, match=r"Key too large for write \(max 2048 bytes\)"):
        await kv.set([ns, "x" * 3000], 1)
    with pytest.raises(KvValidationError, match=r"Value too large \(max 65536 bytes\)"):
        await kv.set([ns], b"x" * 70000)
    with pytest.raises(KvValidationError, match=r"Too many keys \(max 10\)"):
        async for _ in kv.watch([[ns, i] for i in range(11)]):
            pass


async def test_keys_and_values_it_cannot_store_are_validation_errors(
    kv: denokv.Kv, ns: str
) -> None:
    # Each was once another exception type (or, for a str key, silently the key
    # of its characters); nothing reaches the server.
    with pytest.raises(KvValidationError, match=r"not a single str: write \('users',\)"):
        await kv.set("users", 1)
    with pytest.raises(KvValidationError, match="not a single bytes"):
        await kv.get(b"users")
    with pytest.raises(KvValidationError, match="unsupported key part type: object"):
        await kv.set([ns, object()], 1)  # type: ignore[list-item]
    with pytest.raises(KvValidationError, match="lone surrogate"):
        await kv.get([ns, "\ud800"])
    with pytest.raises(KvValidationError, match=r"of type object \(inside the dict given\)"):
        await kv.set([ns, "v"], {"a": object()})
    with pytest.raises(KvValidationError, match="cannot store a value of type function"):
        await kv.set([ns, "v"], lambda: 1)
    assert (await kv.get([ns, "v"])).versionstamp is None
    assert [e async for e in kv.list(prefix=[ns])] == []


async def test_number_and_bigint_keys_are_different(kv: denokv.Kv, ns: str) -> None:
    await kv.set([ns, 1], "bigint key")
    await kv.set([ns, denokv.KvNumber(1)], "number key")
    assert (await kv.get([ns, 1])).value == "bigint key"
    assert (await kv.get([ns, 1.0])).value == "number key"
    keys = [e.key async for e in kv.list(prefix=[ns])]
    assert keys == [(ns, 1), (ns, 1.0)] and isinstance(keys[1][1], float)
