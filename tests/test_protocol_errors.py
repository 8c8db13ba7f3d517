"""Bad input gets a 4xx with upstream's exact text and changes nothing (KV_FACTS §7.6, §8).

Every case runs over HTTP/1.1 and over h2c with prior knowledge (what Deno speaks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from denokv import texts as T
from denokv.proto import datapath_pb2 as pb
from tests.support.kvconnect import RawKv, file_state, set_mutation, u64
from tests.support.processes import ServerProcess

KEY = b"\x02k\x00"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("errors") / "kv.sqlite").start()
    yield server
    server.stop()


@pytest.fixture(params=["http1", "h2c"])
def client(request: pytest.FixtureRequest, srv: ServerProcess) -> Iterator[RawKv]:
    client = RawKv(srv.url, srv.token, http2=request.param == "h2c")
    yield client
    client.close()


@pytest.fixture
def kv(client: RawKv, srv: ServerProcess) -> Iterator[RawKv]:
    """A client whose requests must all leave the database exactly as it was."""
    client.write_ok(pb.AtomicWrite(mutations=[set_mutation(KEY, b"keep")]))
    before = file_state(srv.db_path)
    yield client
    assert file_state(srv.db_path) == before, "a rejected request changed the database"


# -- metadata exchange -----------------------------------------------------------


def metadata(kv: RawKv, body: object, content_type: str | None = "application/json",
             auth: str | None = "default") -> tuple[int, str, dict[str, str]]:  # fmt: skip
    headers = {}
    if content_type:
        headers["content-type"] = content_type
    if auth == "default":
        headers["authorization"] = f"Bearer {kv.token}"
    elif auth is not None:
        headers["authorization"] = auth
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = kv.client.post(kv.url + "/", content=raw, headers=headers)
    return resp.status_code, resp.text, dict(resp.headers)


def test_metadata_negotiates_v3_and_describes_the_endpoint(kv: RawKv) -> None:
    status, text, headers = metadata(kv, {"supportedVersions": [1, 2, 3]})
    assert status == 200
    assert headers["content-type"] == "application/json"
    doc = json.loads(text)
    assert list(doc) == ["version", "databaseId", "endpoints", "token", "expiresAt"]
    assert doc["version"] == 3
    assert doc["databaseId"] == "00000000-0000-0000-0000-000000000000"
    assert doc["endpoints"] == [{"url": "/v2", "consistency": "strong"}]
    assert doc["token"] == kv.token
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", doc["expiresAt"])


def test_metadata_falls_back_to_v2(kv: RawKv) -> None:
    status, text, _ = metadata(kv, {"supportedVersions": [1, 2]})
    assert status == 200 and json.loads(text)["version"] == 2


@pytest.mark.parametrize(
    ("body", "content_type", "auth", "status", "text"),
    [
        ({"supportedVersions": [3]}, None, "default", 400, T.NEED_PROTOCOL_2),
        ({"supportedVersions": [3]}, "text/plain", "default", 400, T.NEED_PROTOCOL_2),
        (b"{not json", "application/json", "default", 400, T.NEED_PROTOCOL_2),
        ({"supportedVersions": ["3"]}, "application/json", "default", 400, T.NEED_PROTOCOL_2),
        ({"supportedVersions": [1]}, "application/json", "default", 400, T.NO_COMMON_VERSION),
        ({}, "application/json", "default", 400, T.NO_COMMON_VERSION),
        ({"supportedVersions": [3]}, "application/json", None, 401, T.MALFORMED_AUTH),
        ({"supportedVersions": [3]}, "application/json", "Bearer", 401, T.MALFORMED_AUTH),
        ({"supportedVersions": [3]}, "application/json", "Bearer wrong", 401, T.INVALID_TOKEN),
        ({"supportedVersions": [3]}, "application/json", "Basic abc", 401, T.INVALID_TOKEN),
    ],
)
def test_metadata_errors(kv: RawKv, body: object, content_type: str | None, auth: str | None,
                         status: int, text: str) -> None:  # fmt: skip
    got_status, got_text, headers = metadata(kv, body, content_type, auth)
    assert (got_status, got_text) == (status, text)
    assert headers["content-type"].startswith("text/plain")


def test_metadata_accepts_json_suffix_types_and_charset(kv: RawKv) -> None:
    assert metadata(kv, {"supportedVersions": [3]}, "application/vnd.x+json")[0] == 200
    assert metadata(kv, {"supportedVersions": [3]}, "application/json; charset=utf-8")[0] == 200


# -- data-path headers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "text"),
    [
        ({"x_denokv_version": None}, 400, T.EXPECTED_PROTOCOL),
        ({"x_denokv_version": "1"}, 400, T.EXPECTED_PROTOCOL),
        ({"authorization": None}, 401, T.MALFORMED_AUTH),
        ({"authorization": "Bearer nope-nope-nope"}, 401, T.INVALID_TOKEN),
        ({"x_denokv_database_id": None}, 400, T.INVALID_DATABASE_ID),
        ({"x_denokv_database_id": "not-a-uuid"}, 400, T.INVALID_DATABASE_ID),
        ({"x_denokv_database_id": "11111111-1111-1111-1111-111111111111"}, 400,
         T.INVALID_DATABASE_ID),
    ],
)  # fmt: skip
def test_data_path_header_errors(kv: RawKv, headers: dict[str, str | None], status: int,
                                 text: str) -> None:  # fmt: skip
    for path in ("/v2/snapshot_read", "/v2/atomic_write", "/v2/watch"):
        resp = kv.post(path, b"", **headers)
        assert (resp.status_code, resp.text) == (status, text), path


def test_other_uuid_spellings_of_the_database_id_are_accepted(kv: RawKv) -> None:
    for spelling in ("0" * 32, "{00000000-0000-0000-0000-000000000000}",
                     "urn:uuid:00000000-0000-0000-0000-000000000000"):  # fmt: skip
        assert kv.post("/v2/snapshot_read", b"", x_denokv_database_id=spelling).status_code == 200


def test_malformed_protobuf(kv: RawKv) -> None:
    resp = kv.post("/v2/atomic_write", b"\xff\xff\xff")
    assert resp.status_code == 400
    assert resp.text.startswith("Request protobuf is invalid: failed to decode Protobuf message")
    assert resp.text.endswith(".")


def test_unknown_route_and_wrong_method(kv: RawKv) -> None:
    resp = kv.post("/v3/snapshot_read", b"")
    assert (resp.status_code, resp.text) == (404, T.NOT_FOUND)
    assert kv.client.get(kv.url + "/v2/snapshot_read").status_code == 405


def assert_refused_as_too_large(kv: RawKv, send: Callable[[], httpx.Response]) -> None:
    # The server reads a refused body (up to 4x the limit) to its end before it
    # answers, so the client gets the answer over HTTP/2 too, and the connection
    # goes on serving.
    for _ in range(3):
        resp = send()
        assert (resp.status_code, resp.text) == (413, T.BODY_TOO_LARGE)
    assert kv.read(rr()).status_code == 200


def three_mib() -> Iterator[bytes]:
    for _ in range(3):
        yield b"\x00" * (1024 * 1024)


def test_bodies_over_2_mib_are_refused(kv: RawKv) -> None:
    big = b"\x00" * (2 * 1024 * 1024 + 1)
    assert_refused_as_too_large(kv, lambda: kv.post("/v2/atomic_write", big))


def test_streamed_bodies_over_2_mib_are_refused_without_content_length(kv: RawKv) -> None:
    assert_refused_as_too_large(
        kv,
        lambda: kv.client.post(
            kv.url + "/v2/atomic_write", content=three_mib(), headers=kv.headers()
        ),
    )


def test_an_early_refusal_of_a_large_body_still_reaches_the_client(kv: RawKv) -> None:
    # A wrong token is refused before the body is read; the body (larger than an
    # HTTP/2 flow-control window) must not leave the upload, or the connection, stuck.
    for _ in range(3):
        resp = kv.client.post(
            kv.url + "/v2/atomic_write",
            content=three_mib(),
            headers=kv.headers(authorization="Bearer wrong-token-0000"),
        )
        assert resp.status_code == 401
    assert kv.read(rr()).status_code == 200


# -- limits -------------------------------------------------------------------------

BIG = b"\x02" + b"x" * 2047 + b"\x00"  # 2049 bytes: a legal read bound, too long to write


def rr(start: bytes = b"", end: bytes = b"\xff", limit: int = 1) -> pb.ReadRange:
    return pb.ReadRange(start=start, end=end, limit=limit)


@pytest.mark.parametrize(
    ("ranges", "text"),
    [
        ([rr()] * 11, T.TOO_MANY_RANGES),
        ([rr(limit=0)], T.INVALID_LIMIT),
        ([rr(limit=-5)], T.INVALID_LIMIT),
        ([rr(start=BIG + b"\x00")], T.KEY_TOO_LARGE),
        ([rr(end=BIG + b"\x00")], T.KEY_TOO_LARGE),
        ([rr(limit=600), rr(limit=401)], T.TOO_MANY_ENTRIES),
    ],
)
def test_read_limits(kv: RawKv, ranges: list[pb.ReadRange], text: str) -> None:
    resp = kv.read(*ranges)
    assert (resp.status_code, resp.text) == (400, text)


def test_read_at_the_limits_is_fine(kv: RawKv) -> None:
    resp = kv.read(*([rr(start=BIG, limit=100)] * 10))
    assert resp.status_code == 200


def mut(key: bytes = KEY, data: bytes | None = b"v", kind: pb.MutationType = pb.M_SET,
        encoding: pb.ValueEncoding = pb.VE_BYTES, **kw: Any) -> pb.Mutation:  # fmt: skip
    value = None if data is None else pb.KvValue(data=data, encoding=encoding)
    return pb.Mutation(key=key, value=value, mutation_type=kind, **kw)


def enq(**kw: Any) -> pb.Enqueue:
    import time

    kw.setdefault("payload", b"\xff\x0f\x49\x02")
    kw.setdefault("deadline_ms", int(time.time() * 1000))
    return pb.Enqueue(**kw)


@pytest.mark.parametrize(
    ("write", "text"),
    [
        (pb.AtomicWrite(checks=[pb.Check(key=KEY)] * 101), T.TOO_MANY_CHECKS),
        (pb.AtomicWrite(mutations=[mut()] * 1001), T.TOO_MANY_MUTATIONS),
        (pb.AtomicWrite(mutations=[mut()] * 600, enqueues=[enq()] * 401), T.TOO_MANY_MUTATIONS),
        (pb.AtomicWrite(checks=[pb.Check(key=BIG + b"\x00")]), T.KEY_TOO_LARGE),
        (pb.AtomicWrite(checks=[pb.Check(key=KEY, versionstamp=b"12345")]),
         T.INVALID_VERSIONSTAMP),
        (pb.AtomicWrite(mutations=[mut(key=BIG)]), T.KEY_TOO_LARGE),
        (pb.AtomicWrite(mutations=[mut(data=b"x" * 65537)]), T.VALUE_TOO_LARGE),
        (pb.AtomicWrite(mutations=[mut(data=None)]), T.INVALID_MUTATION),
        (pb.AtomicWrite(mutations=[mut(data=None, kind=pb.M_SUM)]), T.INVALID_MUTATION),
        # Numbers the enums do not name, on purpose (the ignores): what a bad client sends.
        (pb.AtomicWrite(mutations=[mut(kind=7)]), T.INVALID_MUTATION),  # type: ignore[arg-type]
        (pb.AtomicWrite(mutations=[mut(kind=pb.M_UNSPECIFIED)]), T.INVALID_MUTATION),
        (pb.AtomicWrite(mutations=[mut(encoding=0)]), "The value encoding 0 is unknown."),  # type: ignore[arg-type]
        (pb.AtomicWrite(mutations=[mut(encoding=9)]), "The value encoding 9 is unknown."),  # type: ignore[arg-type]
        (pb.AtomicWrite(mutations=[mut(data=b"1234567", encoding=pb.VE_LE64)]), T.INVALID_LE64),
        (pb.AtomicWrite(mutations=[mut(expire_at_ms=-2)]), T.INVALID_EXPIRE_AT),
        (pb.AtomicWrite(enqueues=[enq(payload=b"x" * 65537)]), T.VALUE_TOO_LARGE),
        (pb.AtomicWrite(enqueues=[enq(keys_if_undelivered=[KEY] * 11)]),
         T.TOO_MANY_UNDELIVERED_KEYS),
        (pb.AtomicWrite(enqueues=[enq(keys_if_undelivered=[BIG])]), T.KEY_TOO_LARGE),
        (pb.AtomicWrite(enqueues=[enq(backoff_schedule=[1] * 11)]), T.TOO_MANY_BACKOFF_INTERVALS),
        (pb.AtomicWrite(enqueues=[enq(backoff_schedule=[3_600_001])]), T.BACKOFF_TOO_LARGE),
        (pb.AtomicWrite(enqueues=[enq(deadline_ms=-1)]), T.INVALID_DEADLINE),
        (pb.AtomicWrite(enqueues=[enq(deadline_ms=2**62)]), T.INVALID_DEADLINE),
        (pb.AtomicWrite(mutations=[mut(key=b"\x02%d\x00" % i, data=b"x" * 65536)
                                   for i in range(13)]), T.WRITE_TOO_LARGE),
    ],
)  # fmt: skip
def test_write_limits(kv: RawKv, write: pb.AtomicWrite, text: str) -> None:
    resp = kv.write(write)
    assert (resp.status_code, resp.text) == (400, text)


def test_100_checks_are_accepted_as_denos_own_engine_does(client: RawKv) -> None:
    # Upstream's server refuses more than 10; a Deno program with 100 checks works
    # on a local file, so it must work here too (KV_FACTS §17).
    checks = [pb.Check(key=b"\x02c%d\x00" % i) for i in range(100)]
    out = pb.AtomicWriteOutput.FromString(client.write(pb.AtomicWrite(checks=checks)).content)
    assert out.status == pb.AW_SUCCESS


def test_the_first_failing_rule_is_the_one_reported(kv: RawKv) -> None:
    write = pb.AtomicWrite(
        checks=[pb.Check(key=KEY, versionstamp=b"bad")],
        mutations=[mut(key=BIG)],
    )
    assert kv.write(write).text == T.INVALID_VERSIONSTAMP


NON_U64_STORED = "Failed to perform '{}' mutation on a non-U64 value in the database"


@pytest.mark.parametrize(
    ("old", "kind", "operand", "text"),
    [
        (b"v", pb.M_SUM, u64(1), NON_U64_STORED.format("sum")),
        (b"v", pb.M_MIN, u64(1), NON_U64_STORED.format("min")),
        (b"v", pb.M_MAX, u64(1), NON_U64_STORED.format("max")),
        (None, pb.M_MIN, pb.KvValue(data=b"x", encoding=pb.VE_BYTES),
         "Failed to perform 'min' mutation on a non-U64 operand"),
        (None, pb.M_SUM, pb.KvValue(data=b"x", encoding=pb.VE_BYTES),
         "Some of the parameters are not valid V8 values"),
    ],
)  # fmt: skip
def test_type_errors_roll_back_the_whole_write(
    client: RawKv,
    srv: ServerProcess,
    old: bytes | None,
    kind: pb.MutationType,
    operand: pb.KvValue,
    text: str,
) -> None:
    kv = client
    target = b"\x02typed-" + text.encode() + b"\x00"  # a key of its own for each case
    before_vs = None
    if old is not None:
        kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(target, old)]))
        before_vs = kv.get(target)
    before = file_state(srv.db_path)
    # The first mutation is fine on its own; upstream would commit it anyway.
    write = pb.AtomicWrite(
        mutations=[
            set_mutation(b"\x02partial\x00", b"must not persist"),
            pb.Mutation(key=target, value=operand, mutation_type=kind),
        ]
    )
    resp = kv.write(write)
    assert (resp.status_code, resp.text) == (400, text)
    assert kv.get(b"\x02partial\x00") is None
    assert kv.get(target) == before_vs
    assert file_state(srv.db_path) == before  # not even the version moved


@pytest.mark.parametrize(
    ("keys", "text"),
    [([KEY] * 11, T.TOO_MANY_WATCH_KEYS), ([BIG], T.KEY_TOO_LARGE)],
)
def test_watch_limits(kv: RawKv, keys: list[bytes], text: str) -> None:
    body = pb.Watch(keys=[pb.WatchKey(key=k) for k in keys]).SerializeToString()
    resp = kv.post("/v2/watch", body)
    assert (resp.status_code, resp.text) == (400, text)
