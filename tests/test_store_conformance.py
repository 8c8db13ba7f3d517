"""One conformance suite for every ObjectStore: the memory store, S3Store on a real moto
server, and S3Store on s3rver.

s3rver accepts If-None-Match / If-Match and ignores them, so the conditional-write
assertions are strict xfails there (they fail today; if s3rver ever enforces them the
suite says so), and the probe must report it as not enforcing. Everything else must
hold on all three.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, create_bucket, unique_bucket_name
from tests.support.s3rver import S3rver, s3rver_available
from timemachine.memory_store import MemoryStore
from timemachine.s3 import S3Options, S3Store
from timemachine.store import (
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    check_conditional_writes,
)

PREFIX = "conf/"
IGNORES_CONDITIONS = pytest.mark.xfail(
    strict=True, reason="s3rver ignores If-None-Match and If-Match on PutObject"
)
MOTO = pytest.param("moto", marks=pytest.mark.s3)
S3RVER_MARKS = [pytest.mark.s3, pytest.mark.node]
KINDS = ["memory", MOTO, pytest.param("s3rver", marks=S3RVER_MARKS)]
CONDITIONAL_KINDS = [
    "memory",
    MOTO,
    pytest.param("s3rver", marks=[*S3RVER_MARKS, IGNORES_CONDITIONS]),
]


@pytest.fixture
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ObjectStore]:
    kind = request.param
    if kind == "memory":
        yield MemoryStore(bucket="mem")
        return
    if kind == "moto":
        endpoint = request.getfixturevalue("moto_s3").endpoint
    else:
        if not s3rver_available():
            pytest.skip("node or tests/node/node_modules/s3rver missing")
        server: S3rver = request.getfixturevalue("s3rver_server")
        endpoint = server.endpoint
    bucket = unique_bucket_name("conf")
    create_bucket(endpoint, bucket)
    options = S3Options(
        bucket,
        PREFIX,
        endpoint,
        "us-east-1",
        force_path_style=True,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    s3 = S3Store(options)
    try:
        yield s3
    finally:
        await s3.close()


every_store = pytest.mark.parametrize("store", KINDS, indirect=True)
conditional_store = pytest.mark.parametrize("store", CONDITIONAL_KINDS, indirect=True)


@every_store
async def test_put_returns_the_etag_that_get_versioned_sees(store: ObjectStore) -> None:
    etag = await store.put(PREFIX + "a", b"body a")
    assert isinstance(etag, str) and etag
    assert await store.get(PREFIX + "a") == b"body a"
    assert await store.get_versioned(PREFIX + "a") == (b"body a", etag)
    replaced = await store.put(PREFIX + "a", b"body b")
    assert replaced and replaced != etag
    assert await store.get_versioned(PREFIX + "a") == (b"body b", replaced)


@every_store
async def test_empty_body_round_trips(store: ObjectStore) -> None:
    assert await store.put(PREFIX + "empty", b"")
    assert await store.get(PREFIX + "empty") == b""


@every_store
async def test_missing_object_is_object_not_found(store: ObjectStore) -> None:
    for read in (store.get, store.get_versioned):
        with pytest.raises(ObjectNotFound) as caught:
            await read(PREFIX + "missing")
        assert not isinstance(caught.value, ObjectStoreError)
        assert caught.value.key == PREFIX + "missing"
        assert "missing" in str(caught.value)


@every_store
async def test_create_only_put_of_a_new_key(store: ObjectStore) -> None:
    etag = await store.put(PREFIX + "new", b"first", if_absent=True)
    assert etag
    assert await store.get_versioned(PREFIX + "new") == (b"first", etag)


@conditional_store
async def test_create_only_put_refuses_an_existing_key(store: ObjectStore) -> None:
    await store.put(PREFIX + "k", b"first")
    assert await store.put(PREFIX + "k", b"second", if_absent=True) is None
    assert await store.get(PREFIX + "k") == b"first"


@every_store
async def test_put_if_match_with_the_current_etag_replaces(store: ObjectStore) -> None:
    etag = await store.put(PREFIX + "lease", b"v1")
    assert etag
    swapped = await store.put(PREFIX + "lease", b"v2", if_match=etag)
    assert swapped and swapped != etag
    assert await store.get_versioned(PREFIX + "lease") == (b"v2", swapped)


@conditional_store
async def test_put_if_match_with_a_stale_etag_changes_nothing(store: ObjectStore) -> None:
    stale = await store.put(PREFIX + "lease", b"v1")
    current = await store.put(PREFIX + "lease", b"v2")
    assert stale and current
    assert await store.put(PREFIX + "lease", b"v3", if_match=stale) is None
    assert await store.get_versioned(PREFIX + "lease") == (b"v2", current)


@conditional_store
async def test_put_if_match_on_a_missing_object_changes_nothing(store: ObjectStore) -> None:
    assert await store.put(PREFIX + "gone", b"v", if_match='"0123456789abcdef"') is None
    with pytest.raises(ObjectNotFound):
        await store.get(PREFIX + "gone")


@every_store
async def test_list_in_key_order_under_the_prefix(store: ObjectStore) -> None:
    keys = [f"{PREFIX}logs/{i:04d}.bin" for i in (5, 1, 3, 10, 2)]
    for key in keys:
        await store.put(key, key.encode())
    await store.put("elsewhere/x", b"x")
    listed = await store.list(PREFIX + "logs/")
    assert [o.key for o in listed] == sorted(keys)
    assert [o.size for o in listed] == [len(k) for k in sorted(keys)]
    assert all(o.last_modified > 1_600_000_000 for o in listed)
    after = await store.list(PREFIX + "logs/", start_after=f"{PREFIX}logs/0003.bin")
    assert [o.key for o in after] == [f"{PREFIX}logs/0005.bin", f"{PREFIX}logs/0010.bin"]
    assert await store.list(PREFIX + "nothing/") == []


@every_store
async def test_list_folders_gives_the_next_segment(store: ObjectStore) -> None:
    for key in ("g/b/x", "g/a/x", "g/a/y/z", "g/file", "other/c/x"):
        await store.put(PREFIX + key, b".")
    assert await store.list_folders(PREFIX + "g/") == ["a/", "b/"]
    assert await store.list_folders(PREFIX + "none/") == []


@every_store
async def test_delete_removes_keys_and_ignores_absent_ones(store: ObjectStore) -> None:
    keys = [f"{PREFIX}d/{i}" for i in range(5)]
    for key in keys:
        await store.put(key, b".")
    await store.delete([*keys[:3], PREFIX + "d/never-existed"])
    assert [o.key for o in await store.list(PREFIX + "d/")] == keys[3:]
    await store.delete([])
    await store.delete(keys[3:])
    assert await store.list(PREFIX + "d/") == []


@every_store
async def test_put_refuses_both_conditions(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        await store.put(PREFIX + "x", b"", if_absent=True, if_match='"e"')


@pytest.mark.parametrize("store", KINDS, indirect=True)
async def test_probe_tells_which_stores_enforce_conditional_writes(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    found = await check_conditional_writes(store, PREFIX)
    kind = request.node.callspec.params["store"]
    if kind == "s3rver":
        assert (found.if_absent, found.if_match) == (False, False)
        assert "If-None-Match and If-Match" in found.describe()
    else:
        assert found.enforced, found.describe()
    assert await store.list(PREFIX) == [], "the probe must delete its object"
