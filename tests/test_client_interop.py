"""The Python client and the real Deno CLI read each other's data, through the server
and through a shared local file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import denokv
from denokv.keys import KeyPart
from tests.support.deno import run_deno
from tests.support.processes import ServerProcess

pytestmark = pytest.mark.deno

PY_VALUES: list[tuple[tuple[KeyPart, ...], object, object]] = [
    # (key, value written by Python, what Deno's dump.ts reports)
    (("py", "str"), "hello ✓", "hello ✓"),
    (("py", "number"), 42, 42),
    (("py", "float"), 1.5, 1.5),
    (("py", "bigint"), 2**70, {"bigint": str(2**70)}),
    (("py", "bytes"), b"\x00\x01\xff", {"bytes": [0, 1, 255]}),
    (("py", "u64"), denokv.KvU64(2**64 - 1), {"u64": str(2**64 - 1)}),
    (("py", "date"), datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
     {"date": "2024-05-06T07:08:09.123Z"}),
    (("py", "nested"), {"a": [1, {"b": None}], "s": {1, 2}},
     {"a": [1, {"b": None}], "s": {"set": [1, 2]}}),
    (("py", 7), "bigint key", "bigint key"),
    (("py", 7.0), "number key", "number key"),
]  # fmt: skip


def deno_key(key: tuple[KeyPart, ...]) -> list[object]:
    """A key as dump.ts prints it: bigints tagged, numbers as JSON numbers."""
    out: list[object] = []
    for p in key:
        if isinstance(p, int):
            out.append({"bigint": str(p)})
        elif isinstance(p, float) and p.is_integer():
            out.append(int(p))
        else:
            out.append(p)
    return out


async def write_from_python(kv: denokv.Kv) -> None:
    for key, value, _ in PY_VALUES:
        assert (await kv.set(list(key), value)).ok


def check_deno_saw(dump: list[dict[str, object]]) -> None:
    seen = {repr(row["key"]): row["value"] for row in dump}
    for key, _, expected in PY_VALUES:
        assert seen[repr(deno_key(key))] == expected, key


async def read_from_python(kv: denokv.Kv) -> dict[str, Any]:
    wanted: dict[str, list[KeyPart]] = {
        "str": ["str", "hello"], "num": ["num", 1.0], "big": ["big", 12345678901234567890],
        "bytes": ["bytes", b"\x00\x00\x01"], "obj": ["obj"], "date": ["date"], "map": ["map"],
        "set": ["set"], "u64": ["u64"], "counter": ["counter"], "unicode": ["unicode", "ключ 🔑"],
    }  # fmt: skip
    entries = await kv.get_many(list(wanted.values())[:10])
    entries.append(await kv.get(wanted["unicode"]))
    return {name: e.value for name, e in zip(wanted, entries, strict=True)}


def check_python_saw(got: dict[str, Any]) -> None:
    assert got["str"] == "again"
    assert got["num"] == 1.5
    assert got["big"] == -98765432109876543210
    assert got["bytes"] == b"\x09\x08\x07"
    obj = got["obj"]
    assert isinstance(obj, dict) and obj["a"] == [1, "two", {"three": 3}] and obj["n"] is None
    assert obj["inf"] == float("inf")
    assert got["date"] == datetime.fromtimestamp(1700000000, UTC)
    assert dict(got["map"]) == {"k": 1, 2: "v"}
    assert set(got["set"]) == {1, 2, 3}
    assert got["u64"] == denokv.KvU64(18446744073709551615)
    assert got["counter"] == denokv.KvU64(5)
    assert got["unicode"] == "значение"


def test_through_the_server_both_ways(server: ServerProcess) -> None:
    async def python_side() -> None:
        async with denokv.open_kv(server.url, access_token=server.token) as kv:
            await write_from_python(kv)

    asyncio.run(python_side())
    check_deno_saw(run_deno("dump.ts", server.url, token=server.token))
    run_deno("populate.ts", server.url, token=server.token)

    async def read_back() -> dict[str, object]:
        async with denokv.open_kv(server.url, access_token=server.token) as kv:
            return await read_from_python(kv)

    check_python_saw(asyncio.run(read_back()))


def test_through_a_shared_file_both_ways(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"
    run_deno("populate.ts", str(db))

    async def python_side() -> dict[str, object]:
        async with denokv.open_kv(db) as kv:
            got = await read_from_python(kv)
            await write_from_python(kv)
            return got

    check_python_saw(asyncio.run(python_side()))
    check_deno_saw(run_deno("dump.ts", str(db)))


def test_a_python_watch_sees_a_deno_write(server: ServerProcess) -> None:
    async def scenario() -> list[object]:
        async with denokv.open_kv(server.url, access_token=server.token) as kv:
            stream = kv.watch([["watched"]])
            first = await asyncio.wait_for(stream.__anext__(), 10)
            writer = asyncio.create_task(
                asyncio.to_thread(
                    run_deno, "watch_writer.ts", server.url, "from deno", token=server.token
                )
            )
            second = await asyncio.wait_for(stream.__anext__(), 60)
            await writer
            await stream.aclose()
            return [first[0].value, second[0].value]

    assert asyncio.run(scenario()) == [None, "from deno"]
