"""The in-memory object store: S3's semantics in a dict, and the faults it can inject.

The interface behaviour it shares with S3 is also checked, against real servers, in
test_store_conformance.py; this file covers what only the memory store does.
"""

from __future__ import annotations

import asyncio

import pytest

from timemachine.memory_store import MemoryStore, etag_of
from timemachine.store import (
    DeleteError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    check_conditional_writes,
)


async def filled(*keys: str) -> MemoryStore:
    store = MemoryStore(bucket="bkt")
    for key in keys:
        await store.put(key, key.encode())
    return store


async def test_etag_is_the_quoted_md5_and_changes_with_the_body() -> None:
    store = MemoryStore()
    first = await store.put("k", b"one")
    assert first == etag_of(b"one") == '"f97c5d29941bfb1b2fdab0874906ab82"'
    second = await store.put("k", b"two")
    assert second != first
    assert await store.get_versioned("k") == (b"two", second)


async def test_a_stored_body_is_a_copy() -> None:
    store = MemoryStore()
    body = bytearray(b"abc")
    await store.put("k", body)  # type: ignore[arg-type]
    body[0] = ord("x")
    assert await store.get("k") == b"abc"


async def test_fail_next_counts_down_then_recovers() -> None:
    store = await filled("a")
    store.fail_next(2)
    for _ in range(2):
        with pytest.raises(ObjectStoreError, match=r"^memory: get bkt/a: injected fault$"):
            await store.get("a")
    assert await store.get("a") == b"a"
    assert store.calls["get"] == 3
    assert store.faults == []


async def test_fail_next_of_one_operation_leaves_the_others_alone() -> None:
    store = await filled("a")
    store.fail_next(1, "put")
    assert await store.get("a") == b"a"
    assert [o.key for o in await store.list("")] == ["a"]
    with pytest.raises(ObjectStoreError, match="put bkt/b"):
        await store.put("b", b"b")
    assert store.keys() == ["a"], "a failed put must not store anything"
    assert await store.put("b", b"b") is not None


async def test_fail_next_with_a_chosen_error_and_a_factory() -> None:
    store = await filled("a")
    store.fail_next(1, "get", TimeoutError("slow"))
    with pytest.raises(TimeoutError, match="slow"):
        await store.get("a")
    store.fail_next(1, "list", lambda op, target: ConnectionResetError(f"{op} {target}"))
    with pytest.raises(ConnectionResetError, match="list pre/"):
        await store.list("pre/")


async def test_a_fault_after_the_operation_lets_the_write_land() -> None:
    store = MemoryStore()
    store.fail_next(1, "put", after=True)
    with pytest.raises(ObjectStoreError):
        await store.put("k", b"landed")
    assert await store.get("k") == b"landed"
    assert await store.put("k", b"again", if_absent=True) is None


async def test_faults_queue_in_order() -> None:
    store = await filled("a")
    store.fail_next(1, "get", KeyError("first"))
    store.fail_next(1, None, ValueError("second"))
    with pytest.raises(KeyError):
        await store.get("a")
    with pytest.raises(ValueError, match="second"):
        await store.list("")
    assert await store.get("a") == b"a"


def test_fail_next_refuses_an_unknown_operation() -> None:
    with pytest.raises(ValueError, match="unknown operation 'head'"):
        MemoryStore().fail_next(1, "head")  # type: ignore[arg-type]


async def test_hidden_object_is_left_out_of_listings_but_still_readable() -> None:
    store = await filled("p/g1/x", "p/g2/y", "p/z")
    store.hide("p/g2/y")
    assert [o.key for o in await store.list("p/")] == ["p/g1/x", "p/z"]
    assert await store.list_folders("p/") == ["g1/"]
    assert await store.get("p/g2/y") == b"p/g2/y"
    store.unhide("p/g2/y")
    assert await store.list_folders("p/") == ["g1/", "g2/"]


async def test_hidden_object_can_also_be_unreadable() -> None:
    store = await filled("p/x")
    store.hide("p/x", gettable=False)
    with pytest.raises(ObjectNotFound, match="memory: get bkt/p/x: no such object"):
        await store.get("p/x")
    # It is still there for a create-only write, as on a store that lists late.
    assert await store.put("p/x", b"new", if_absent=True) is None


async def test_listing_out_of_order() -> None:
    keys = [f"k{i:02d}" for i in range(12)]
    store = await filled(*keys)
    store.listing_order = "reverse"
    assert [o.key for o in await store.list("")] == keys[::-1]
    store.listing_order = "shuffle"
    shuffled = [o.key for o in await store.list("")]
    assert sorted(shuffled) == keys and shuffled != keys
    store.listing_order = "key"
    assert [o.key for o in await store.list("", start_after="k09")] == ["k10", "k11"]


async def test_refused_deletes_name_the_keys_and_the_rest_is_deleted() -> None:
    store = await filled("a", "b", "c")
    store.refuse_delete("b")
    with pytest.raises(DeleteError) as caught:
        await store.delete(["a", "b", "c", "absent"])
    assert caught.value.keys == ["b"]
    assert "memory: delete bkt/b: 1 not deleted: AccessDenied" in str(caught.value)
    assert store.keys() == ["b"]


async def test_conditions_can_be_ignored_like_s3rver() -> None:
    store = MemoryStore(enforce_conditions=False)
    await store.put("k", b"1")
    assert await store.put("k", b"2", if_absent=True) is not None
    assert await store.put("k", b"3", if_match='"nope"') is not None
    assert await store.get("k") == b"3"
    assert not (await check_conditional_writes(store, "p/")).enforced


async def test_hooks_replace_an_operation_and_can_call_the_default() -> None:
    store = await filled("p/a")
    seen: list[str] = []

    async def get_and_record(key: str) -> bytes:
        seen.append(key)
        return (await store.default_get(key)).upper()

    async def list_nothing(prefix: str, start_after: str | None) -> list[ObjectInfo]:
        return []

    store.get_func = get_and_record
    store.list_func = list_nothing
    assert await store.get("p/a") == b"P/A"
    assert await store.list("p/") == []
    assert seen == ["p/a"]
    assert store.calls["get"] == 1 and store.calls["list"] == 1

    store.fail_next(1, "get")  # faults still apply in front of a hook
    with pytest.raises(ObjectStoreError):
        await store.get("p/a")
    assert seen == ["p/a"]


async def test_concurrent_create_only_writes_have_one_winner() -> None:
    store = MemoryStore()
    results = await asyncio.gather(
        *(store.put("lock", f"holder {i}".encode(), if_absent=True) for i in range(20))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await store.get_versioned("lock"))[1] == winners[0]


async def test_listing_times_come_from_the_clock() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.put("a", b"12345")
    now[0] = 2000.0
    await store.put("b", b"1")
    assert await store.list("") == [ObjectInfo("a", 5, 1000.0), ObjectInfo("b", 1, 2000.0)]


async def test_put_refuses_both_conditions_at_once() -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        await MemoryStore().put("k", b"", if_absent=True, if_match='"x"')


async def test_probe_catches_a_store_that_creates_despite_if_match() -> None:
    # Some MinIO releases enforced If-Match on existing objects only.
    store = MemoryStore()

    async def lenient_put(
        key: str, body: bytes, if_absent: bool, if_match: str | None
    ) -> str | None:
        if if_match is not None and key not in store.objects:
            if_match = None
        return await store.default_put(key, body, if_absent, if_match)

    assert (await check_conditional_writes(store, "p/")).enforced
    store.put_func = lenient_put
    found = await check_conditional_writes(store, "p/")
    assert (found.if_absent, found.if_match) == (True, False)
    assert found.describe() == "the store does not enforce If-Match"
    assert store.keys() == [], "both probe objects are deleted"
