"""Every number bound for SQLite is checked before it reaches the writer.

Three gates, each with the texts its callers know: the Python client (Deno's
own texts, measured with Deno 2.9's local engine), the server's protobuf
conversion (upstream's texts), and the engine (`denokv.validation`), which every
path passes, the embedded client's raw mutations included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import denokv
from denokv import texts as T
from denokv.client.errors import KvValidationError
from denokv.engine_errors import WriteError
from denokv.operations import AtomicWrite, Check, Enqueue, Mutation, MutationKind, ValueEncoding
from denokv.proto import datapath_pb2 as pb
from denokv.validation import MAX_TIMESTAMP_MS, check_write
from denokv.values import KvU64
from tests.support.kvconnect import RawKv, file_state, set_mutation
from tests.support.processes import ServerProcess

KEY = b"\x02k\x00"


def mutation(**fields: Any) -> AtomicWrite:
    base: dict[str, Any] = {
        "key": KEY,
        "kind": MutationKind.SET,
        "value": b"v",
        "encoding": ValueEncoding.BYTES,
    }
    return AtomicWrite(mutations=(Mutation(**{**base, **fields}),))


def enqueue(**fields: Any) -> AtomicWrite:
    base: dict[str, Any] = {"payload": b"p", "deadline_ms": 1}
    return AtomicWrite(enqueues=(Enqueue(**{**base, **fields}),))


@pytest.mark.parametrize(
    ("write", "text"),
    [
        (mutation(expire_at_ms=MAX_TIMESTAMP_MS + 1), T.INVALID_EXPIRE_AT),
        (mutation(expire_at_ms=10**19), T.INVALID_EXPIRE_AT),
        (mutation(expire_at_ms=-5), T.INVALID_EXPIRE_AT),
        (mutation(expire_at_ms=1.5), T.INVALID_EXPIRE_AT),
        (mutation(encoding=7), T.INVALID_VALUE_ENCODING.format(n=7)),
        (mutation(encoding=ValueEncoding.LE64, value=b"123"), T.INVALID_LE64),
        (mutation(value="text"), T.INVALID_MUTATION),
        (mutation(key="text"), T.INVALID_MUTATION),
        (mutation(key=b"k" * 3000), T.KEY_TOO_LARGE),
        (mutation(value=b"v" * 70_000), T.VALUE_TOO_LARGE),
        (enqueue(deadline_ms=2**63), T.INVALID_DEADLINE),
        (enqueue(deadline_ms=-1), T.INVALID_DEADLINE),
        (enqueue(backoff_schedule=(-1,)), T.BACKOFF_TOO_LARGE),
        (enqueue(backoff_schedule=(2**40,)), T.BACKOFF_TOO_LARGE),
        (enqueue(backoff_schedule=(1,) * 11), T.TOO_MANY_BACKOFF_INTERVALS),
        (enqueue(keys_if_undelivered=(b"k",) * 11), T.TOO_MANY_UNDELIVERED_KEYS),
        (AtomicWrite(checks=(Check(KEY, b"short"),)), T.INVALID_VERSIONSTAMP),
        (AtomicWrite(checks=tuple(Check(b"%d" % i, None) for i in range(101))), T.TOO_MANY_CHECKS),
    ],
)
def test_the_engine_refuses_what_sqlite_could_not_store(write: AtomicWrite, text: str) -> None:
    with pytest.raises(WriteError) as refused:
        check_write(write)
    assert str(refused.value) == text


def test_the_engine_takes_what_deno_takes() -> None:
    check_write(mutation(expire_at_ms=MAX_TIMESTAMP_MS))
    check_write(AtomicWrite(checks=tuple(Check(b"%d" % i, None) for i in range(100))))
    check_write(enqueue(deadline_ms=MAX_TIMESTAMP_MS, backoff_schedule=(0, 3_600_000)))


async def test_raw_mutations_of_the_embedded_client_are_checked_too(tmp_path: Path) -> None:
    async with denokv.open_kv(str(tmp_path / "kv.sqlite")) as kv:
        bad = Mutation(KEY, MutationKind.SET, b"v", ValueEncoding.BYTES, 2**63 + 5)
        with pytest.raises(KvValidationError, match="Invalid mutation expire at"):
            await asyncio.wait_for(kv.atomic().mutate(bad).commit(), 10)
        assert (await asyncio.wait_for(kv.set(["ok"], 1), 10)).ok


# -- Deno's texts in the Python client ------------------------------------------------


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[denokv.Kv]:
    async with denokv.open_kv(str(tmp_path / "kv.sqlite")) as db:
        yield db


@pytest.mark.parametrize(
    ("expire_in", "text"),
    [
        (10**19, "Invalid mutation: expireIn is too large: 10000000000000000000"),
        (1e19, "Invalid mutation: expireIn is too large: 10000000000000000000"),
        (8.64e15, "Invalid mutation: expireIn is too large: 8640000000000000"),
        (-1, "expireIn must be a non-negative integer: received -1"),
        (1.5, "expireIn must be a non-negative integer: received 1.5"),
        (float("nan"), "expireIn must be a non-negative integer: received NaN"),
    ],
)
async def test_expire_in_texts_are_denos(kv: denokv.Kv, expire_in: float, text: str) -> None:
    with pytest.raises(KvValidationError) as refused:
        await kv.set(["a"], 1, expire_in=expire_in)  # type: ignore[arg-type]
    assert str(refused.value) == text


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"delay": -1}, "Delay must be >= 0: received -1"),
        ({"delay": 31 * 86_400_000}, "Delay cannot be greater than 30 days: received 2678400000"),
        ({"delay": float("nan")}, "Delay cannot be NaN"),
        ({"backoff_schedule": [-1]}, "Invalid backoffSchedule, interval at index 0 is invalid"),
        (
            {"backoff_schedule": [1, 3_600_001]},
            "Invalid backoffSchedule, interval at index 1 is invalid",
        ),
        ({"backoff_schedule": [1] * 6}, "Invalid backoffSchedule, max 5 intervals allowed"),
    ],
)
async def test_enqueue_texts_are_denos(
    kv: denokv.Kv, options: dict[str, object], text: str
) -> None:
    with pytest.raises(KvValidationError) as refused:
        await kv.enqueue("m", **options)  # type: ignore[arg-type]
    assert str(refused.value) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (2**64, "Value must fit in a 64-bit unsigned integer"),
        (-1, "Value must be a positive bigint: received -1"),
    ],
)
def test_u64_texts_are_denos(n: int, text: str) -> None:
    with pytest.raises(KvValidationError) as refused:
        KvU64(n)
    assert str(refused.value) == text


# -- the server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("validation") / "kv.sqlite").start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("msg", "text"),
    [
        (
            pb.AtomicWrite(mutations=[set_mutation(KEY, b"v", expire_at_ms=2**62)]),
            T.INVALID_EXPIRE_AT,
        ),
        (
            pb.AtomicWrite(mutations=[set_mutation(KEY, b"v", expire_at_ms=MAX_TIMESTAMP_MS + 1)]),
            T.INVALID_EXPIRE_AT,
        ),
        (
            pb.AtomicWrite(enqueues=[pb.Enqueue(payload=b"p", deadline_ms=2**62)]),
            T.INVALID_DEADLINE,
        ),
    ],
)
def test_the_server_refuses_out_of_range_numbers_and_changes_nothing(
    srv: ServerProcess, msg: pb.AtomicWrite, text: str
) -> None:
    client = RawKv(srv.url, srv.token)
    try:
        client.write_ok(pb.AtomicWrite(mutations=[set_mutation(KEY, b"keep")]))
        before = file_state(srv.db_path)
        resp = client.write(msg)
        assert (resp.status_code, resp.text) == (400, text)
        assert file_state(srv.db_path) == before
        client.write_ok(pb.AtomicWrite(mutations=[set_mutation(KEY, b"still works")]))
    finally:
        client.close()
