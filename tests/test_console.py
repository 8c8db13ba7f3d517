"""The web console's API in process: sign-in rules, paging, typed and checked edits, import.

The browser tests (tests/test_console_browser.py) drive the same API through the
real page; these pin down the rules each call keeps, quickly.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from v8serialize.jstypes import JSBigInt, JSMap, JSSet, JSUndefined

from denokv.console import live
from denokv.console.health import Sampler, health
from denokv.console.jsvalue import decode_exact, show
from denokv.console.session import SESSION_SECONDS, Sessions
from denokv.engine import Engine
from denokv.keys import KvNumber, encode_key
from denokv.operations import AtomicWrite, Mutation, MutationKind
from denokv.proto import datapath_pb2 as pb
from denokv.server.app import KvServer, ServerConfig
from denokv.values import KvU64, decode_value, encode_value

TOKEN = "console-test-token"


@dataclass
class Console:
    engine: Engine
    server: KvServer
    http: httpx.AsyncClient
    csrf: str = ""

    async def sign_in(self) -> None:
        reply = await self.http.post("/console/api/login", json={"token": TOKEN})
        assert reply.status_code == 200, reply.text
        self.csrf = reply.json()["csrf"]

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {"x-csrf-token": self.csrf, **kwargs.pop("headers", {})}
        if isinstance(body, str):
            return await self.http.post(f"/console/api/{path}", content=body, headers=headers)
        return await self.http.post(f"/console/api/{path}", json=body, headers=headers)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"/console/api/{path}", params=params)

    def put(self, key: tuple[Any, ...], value: object) -> bytes:
        data, encoding = encode_value(value)
        m = Mutation(encode_key(key), MutationKind.SET, data, encoding)
        return self.engine.atomic_write_sync(AtomicWrite(mutations=(m,))).versionstamp

    def value(self, key: tuple[Any, ...]) -> object:
        (entry,) = self.engine.get_entries([encode_key(key)])
        return None if entry is None else decode_value(entry.value, entry.encoding)


async def make_console(**config: Any) -> AsyncIterator[Console]:
    engine = Engine(":memory:")
    server = KvServer(engine, ServerConfig(access_token=TOKEN, **config))
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield Console(engine, server, client)
    engine.close()


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    async for c in make_console(console="read-write"):
        await c.sign_in()
        yield c


# -- sign-in, cookies, CSRF, headers ---------------------------------------------------------


async def test_sign_in_rules_match_the_data_path() -> None:
    async for c in make_console(console="read-write"):
        wrong = await c.http.post("/console/api/login", json={"token": "not-the-token"})
        assert (wrong.status_code, wrong.text) == (401, "Invalid access token.")
        assert "set-cookie" not in wrong.headers
        assert (await c.get("entries")).status_code == 401
        right = await c.http.post("/console/api/login", json={"token": TOKEN})
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
        assert TOKEN not in cookie and TOKEN not in right.text
        assert (await c.get("entries")).status_code == 200


async def test_state_changing_calls_need_the_csrf_token(console: Console) -> None:
    body = {"key_text": '["a"]', "type": "string", "text": "x", "expect": None}
    missing = await console.post("set", body, headers={"x-csrf-token": ""})
    assert (missing.status_code, missing.text) == (
        403,
        "Missing or wrong CSRF token; reload the console.",
    )
    cross = await console.post("set", body, headers={"sec-fetch-site": "cross-site"})
    assert cross.status_code == 403
    foreign = await console.post("set", body, headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert console.value(("a",)) is None
    assert (await console.post("set", body)).status_code == 200
    assert console.value(("a",)) == "x"


async def test_bearer_token_works_without_cookie_or_csrf() -> None:
    async for c in make_console(console="read-write"):
        auth = {"authorization": f"Bearer {TOKEN}"}
        body = {"key_text": '["b"]', "type": "number", "text": "2", "expect": None}
        reply = await c.http.post("/console/api/set", json=body, headers=auth)
        assert reply.status_code == 200, reply.text
        bad = await c.http.get(
            "/console/api/entries", headers={"authorization": "Bearer nope-nope"}
        )
        assert (bad.status_code, bad.text) == (401, "Invalid access token.")


def test_session_cookies_expire_and_cannot_be_forged() -> None:
    engine = Engine(":memory:")
    try:
        server = KvServer(engine, ServerConfig(access_token=TOKEN))
        sessions = Sessions(server.auth, TOKEN)
        now = time.time()
        cookie = sessions.issue(now)
        assert sessions.valid(cookie, now + 10)
        assert not sessions.valid(cookie, now + SESSION_SECONDS + 1)
        issued, nonce, mac = cookie.split(".")
        assert not sessions.valid(f"{int(issued) + 1}.{nonce}.{mac}", now)
        other = Sessions(server.auth, "another-token-here")
        assert not other.valid(cookie, now)  # a new token signs everyone out
        assert sessions.csrf(cookie) != other.csrf(cookie)
    finally:
        engine.close()


async def test_every_answer_carries_a_strict_csp(console: Console) -> None:
    for path in ("/console/", "/console/static/app.js", "/console/api/entries",
                 "/console/api/nope", "/console/static/../app.py"):  # fmt: skip
        reply = await console.http.get(path)
        csp = reply.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert reply.headers["x-content-type-options"] == "nosniff"
    assert (await console.http.get("/console/static/../app.py")).status_code == 404
    index = (await console.http.get("/console/")).text
    assert '<script type="module" src="/console/static/app.js"></script>' in index
    assert "onclick" not in index and "<script>" not in index


async def test_console_off_and_read_only() -> None:
    async for c in make_console(console="off"):
        assert (await c.http.get("/console/")).status_code == 404
    async for c in make_console(console="read-only"):
        await c.sign_in()
        assert (await c.get("entries")).status_code == 200
        reply = await c.post(
            "set", {"key_text": '["a"]', "type": "string", "text": "x", "expect": None}
        )
        assert reply.status_code == 403 and "read-only" in reply.text
        assert c.value(("a",)) is None


# -- browsing ----------------------------------------------------------------------------------


async def test_pages_forwards_and_backwards_with_cursors(console: Console) -> None:
    for i in range(25):
        console.put(("p", i), i)
    console.put(("p",), "the prefix itself")
    console.put(("q", 1), "outside")
    first = (await console.get("entries", prefix='["p"]', limit=10)).json()
    assert first["entries"][0]["key"]["text"] == '["p"]'
    assert [e["preview"] for e in first["entries"][1:]] == [str(i) for i in range(9)]
    assert (first["more_before"], first["more_after"]) == (False, True)
    second = (await console.get("entries", prefix='["p"]', limit=10,
                                after=first["entries"][-1]["key"]["hex"])).json()  # fmt: skip
    assert [e["key"]["parts"][1] for e in second["entries"]] == [f"{i}n" for i in range(9, 19)]
    assert second["more_before"] and second["more_after"]
    back = (await console.get("entries", prefix='["p"]', limit=10,
                              before=second["entries"][0]["key"]["hex"])).json()  # fmt: skip
    assert back["entries"] == first["entries"] and not back["more_before"]
    last = (await console.get("entries", prefix='["p"]', limit=10, start='["p", 20n]')).json()
    assert [e["preview"] for e in last["entries"]] == ["20", "21", "22", "23", "24"]
    assert last["more_before"] and not last["more_after"]
    outside = (await console.get("entries", prefix='["p"]', start='["q", 1n]')).json()
    assert outside["prefix"]["text"] == "[]" and outside["entries"][0]["preview"] == '"outside"'


async def test_key_parts_and_values_are_shown_in_deno_syntax(console: Console) -> None:
    console.put(("k", "users", KvNumber(1), 1, True, b"\x01\x02"), "x")
    console.put(("v", "map"), JSMap([("a", 1), (JSBigInt(2), datetime(2024, 1, 2, tzinfo=UTC))]))
    console.put(("v", "set"), JSSet(["x", 1]))
    console.put(("v", "u64"), KvU64(5))
    console.put(("v", "undefined"), JSUndefined)
    console.put(("v", "bytes"), b"\x07")
    rows = {e["key"]["text"]: e for e in (await console.get("entries")).json()["entries"]}
    assert '["k", "users", 1, 1n, true, Uint8Array(2) [ 1, 2 ]]' in rows
    assert rows['["v", "map"]']["preview"] == 'Map(2) { "a" => 1, 2n => 2024-01-02T00:00:00.000Z }'
    assert rows['["v", "set"]']["preview"] == 'Set(2) { "x", 1 }'
    assert rows['["v", "u64"]']["preview"] == "[Deno.KvU64: 5n]"
    assert rows['["v", "undefined"]']["type"] == "undefined"
    assert rows['["v", "bytes"]']["preview"] == "Uint8Array(1) [ 7 ]"
    # The key text the page shows is the key text it accepts.
    jumped = await console.get(
        "entry", key_text='["k", "users", 1, 1n, true, Uint8Array(2) [ 1, 2 ]]'
    )
    assert jumped.json()["text"] == '"x"'


async def test_expiry_is_shown(console: Console) -> None:
    reply = await console.post("set", {"key_text": '["e"]', "type": "string", "text": "soon",
                                       "expect": None, "expire_in_ms": 60_000})  # fmt: skip
    assert reply.status_code == 200, reply.text
    entry = (await console.get("entry", key_text='["e"]')).json()
    assert 0 < entry["expireAt"] - time.time() * 1000 <= 60_000


# -- editing -----------------------------------------------------------------------------------


async def test_typed_editor_keeps_1_1n_and_quoted_1_apart(console: Console) -> None:
    for name, kind in (("number", "number"), ("bigint", "bigint"), ("string", "string")):
        body = {"key_text": f'["{name}"]', "type": kind, "text": "1", "expect": None}
        assert (await console.post("set", body)).status_code == 200
    assert console.value(("number",)) == 1 and type(console.value(("number",))) is int
    assert isinstance(console.value(("bigint",)), JSBigInt)
    assert console.value(("string",)) == "1"
    text = '{ a: 1n, b: new Map([["k", new Set([1])]]), c: [undefined, -0] }'
    literal = {"key_text": '["lit"]', "type": "literal", "expect": None, "text": text}
    assert (await console.post("set", literal)).status_code == 200
    shown = (await console.get("entry", key_text='["lit"]')).json()
    assert shown["text"] == '{ a: 1n, b: Map(1) { "k" => Set(1) { 1 } }, c: [ undefined, -0 ] }'
    assert shown["edit"] == {"type": "literal", "text": shown["text"]}
    bad = await console.post("set", {**literal, "text": "{ a: nope }"})
    assert bad.status_code == 400 and "unknown name 'nope'" in bad.text


async def test_stale_edit_is_a_conflict_and_changes_nothing(console: Console) -> None:
    shown = console.put(("doc",), "v1").hex()
    first = await console.post("set", {"key_text": '["doc"]', "type": "string", "text": "v2",
                                       "expect": shown})  # fmt: skip
    assert first.status_code == 200
    stale = await console.post("set", {"key_text": '["doc"]', "type": "string", "text": "v3",
                                       "expect": shown})  # fmt: skip
    assert stale.status_code == 409
    assert stale.json()["current"]["text"] == '"v2"'
    assert console.value(("doc",)) == "v2"
    gone = await console.post("delete", {"key_text": '["doc"]', "expect": shown})
    assert gone.status_code == 409 and console.value(("doc",)) == "v2"
    create = await console.post("set", {"key_text": '["doc"]', "type": "string", "text": "new",
                                        "expect": None})  # fmt: skip
    assert create.status_code == 409  # "new entry" never overwrites one that exists
    no_expect = await console.post("set", {"key_text": '["doc"]', "type": "string", "text": "x"})
    assert no_expect.status_code == 400
    deleted = await console.post(
        "delete", {"key_text": '["doc"]', "expect": first.json()["versionstamp"]}
    )
    assert deleted.status_code == 200 and console.value(("doc",)) is None


async def test_edits_meet_the_data_path_limits(console: Console) -> None:
    huge = {"key_text": '["big"]', "type": "string", "text": "x" * 70_000, "expect": None}
    reply = await console.post("set", huge)
    assert (reply.status_code, reply.text) == (400, "A value exceeds the value size limit.")
    empty = {"key_text": "[]", "type": "null", "text": "", "expect": None}
    assert (await console.post("set", empty)).text == "key cannot be empty"
    long_key = {"key_text": f'["{"k" * 2100}"]', "type": "null", "text": "", "expect": None}
    assert (await console.post("set", long_key)).text == "A key exceeds the key size limit."


async def test_console_writes_fire_watchers(console: Console) -> None:
    key = encode_key(("w",))
    with console.engine.watch([key]) as subscription:
        body = {"key_text": '["w"]', "type": "string", "text": "hi", "expect": None}
        assert (await console.post("set", body)).status_code == 200
        assert await subscription.wait(5)


async def test_replica_without_primary_refuses_console_writes() -> None:
    async for c in make_console(console="read-write", accept_writes=False):
        await c.sign_in()
        reply = await c.post(
            "set", {"key_text": '["a"]', "type": "string", "text": "x", "expect": None}
        )
        assert (reply.status_code, reply.text) == (403, "Writes are disabled for this database")
        assert (await c.get("session")).json()["role"] == "replica"


class RecordingPrimary:
    """Stands in for the network hop only; the real forwarding runs in the browser tests."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def forward(self, method: str, body: bytes) -> tuple[int, bytes, bytes]:
        assert method == "atomic_write"
        self.bodies.append(body)
        out = pb.AtomicWriteOutput(status=pb.AW_CHECK_FAILURE)
        return 200, b"application/x-protobuf", out.SerializeToString()


async def test_replica_forwards_a_checked_kv_connect_write() -> None:
    primary = RecordingPrimary()
    async for c in make_console(console="read-write", accept_writes=False, forwarder=primary):
        await c.sign_in()
        reply = await c.post("set", {"key_text": '["a"]', "type": "number", "text": "5",
                                     "expect": "00000000000000010000"})  # fmt: skip
        assert reply.status_code == 409  # the primary's answer, shown as a conflict
        (body,) = primary.bodies
        msg = pb.AtomicWrite.FromString(body)
        assert msg.checks[0].key == encode_key(("a",))
        assert msg.checks[0].versionstamp == bytes.fromhex("00000000000000010000")
        assert decode_value(msg.mutations[0].value.data, msg.mutations[0].value.encoding) == 5


# -- live, export, import ----------------------------------------------------------------------


async def test_entry_stream_sends_changes_only() -> None:
    engine = Engine(":memory:")
    try:
        keys = [encode_key(("a",)), encode_key(("b",))]
        stream = live.entry_stream(engine, keys, lambda: False)
        first = json.loads(await anext(stream))
        assert [e.get("absent") for e in first["entries"]] == [True, True]
        data, enc = encode_value("new")
        write = AtomicWrite(mutations=(Mutation(keys[1], MutationKind.SET, data, enc),))
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        await engine.atomic_write(write)
        second = json.loads(await asyncio.wait_for(task, 5))
        assert [e["key"]["text"] for e in second["entries"]] == ['["b"]']
        assert second["entries"][0]["text"] == '"new"'
        await stream.aclose()
        assert engine.watches.open_subscriptions == 0
        # A page that says what it shows is sent nothing until something moves.
        (b,) = engine.get_entries([keys[1]])
        assert b is not None
        known = {keys[0]: None, keys[1]: b.versionstamp}
        quiet = live.entry_stream(engine, keys, lambda: False, known)
        task = asyncio.ensure_future(anext(quiet))
        await asyncio.sleep(0.05)
        assert not task.done()
        await engine.atomic_write(
            AtomicWrite(mutations=(Mutation(keys[0], MutationKind.SET, data, enc),))
        )
        third = json.loads(await asyncio.wait_for(task, 5))
        assert [e["key"]["text"] for e in third["entries"]] == ['["a"]']
        await quiet.aclose()
    finally:
        engine.close()


async def test_export_then_import_keeps_every_type(console: Console) -> None:
    values = {
        "n": 1, "f": -0.0, "big": JSBigInt(2**70), "s": "a\ud800b", "u": JSUndefined, "z": None,
        "d": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "b": b"\x00\xff",
        "m": JSMap([(1, {"x": [1, JSBigInt(1)]})]), "set": JSSet(["a"]), "u64": KvU64(7),
    }  # fmt: skip
    for name, value in values.items():
        console.put(("x", name), value)
    console.put(("other",), "not exported")
    exported = await console.http.get("/console/api/export", params={"prefix": '["x"]'})
    assert "attachment" in exported.headers["content-disposition"]
    lines = exported.text.splitlines()
    assert len(lines) == len(values)
    async for target in make_console(console="read-write"):
        await target.sign_in()
        report = (await target.post("import", exported.text)).json()
        assert (report["written"], len(report["batches"])) == (len(values), 1)
        for name in values:
            (a,) = console.engine.get_entries([encode_key(("x", name))])
            (b,) = target.engine.get_entries([encode_key(("x", name))])
            assert a is not None and b is not None, name
            assert b.encoding == a.encoding, name
            assert show(decode_exact(b.value, b.encoding)) == show(
                decode_exact(a.value, a.encoding)
            )
        assert isinstance(target.value(("x", "big")), JSBigInt)
        assert target.value(("x", "u64")) == KvU64(7)
        assert target.value(("other",)) is None


async def test_a_bad_import_line_writes_nothing(console: Console) -> None:
    good = json.dumps({"key": [{"string": "a"}], "value": {"number": 1}})
    bad = json.dumps({"key": [{"string": "b"}], "value": {"strange": 1}})
    reply = await console.post("import", f"{good}\n{bad}\n")
    assert reply.status_code == 400 and reply.text.startswith("Nothing was imported: line 2:")
    assert console.value(("a",)) is None


async def test_import_splits_into_atomic_batches_within_limits(console: Console) -> None:
    lines = [json.dumps({"key": [{"string": "many"}, {"number": i}],
                         "value": {"string": "v" * 500}}) for i in range(2500)]  # fmt: skip
    report = (await console.post("import", "\n".join(lines))).json()
    assert report["written"] == 2500
    counts = [b["count"] for b in report["batches"]]
    assert sum(counts) == 2500 and max(counts) <= 1000 and len(counts) >= 3
    stamps = [b["versionstamp"] for b in report["batches"]]
    assert stamps == sorted(set(stamps))


# -- health ------------------------------------------------------------------------------------


class FakeShipper:
    name = "shipper"

    def __init__(self) -> None:
        self.commits = 0

    def metrics(self) -> list[Any]:
        return []

    def problems(self) -> list[str]:
        return ["backup is 400 s behind"]

    def status(self) -> dict[str, Any]:
        return {
            "generation": "0000018c-gen", "last_upload_ms": 1_700_000_000_000,
            "backlog_entries": 3, "backlog_oldest_ms": 1_699_999_999_000, "errors": 2,
            "bucket": "my bucket", "prefix": "kv/", "commits_total": self.commits,
            "recovery_points": [{"generation": "0000018c-gen", "from_ms": 1, "to_ms": 2,
                                 "from_versionstamp": "00" * 10, "to_versionstamp": "01" * 10}],
        }  # fmt: skip


async def test_health_reads_component_status_and_keeps_rates(console: Console) -> None:
    shipper = FakeShipper()
    console.server.components.append(shipper)
    sampler = Sampler(console.server)
    for t, commits in ((1000, 0), (2000, 10), (3000, 40)):
        shipper.commits = commits
        sampler.sample(now_ms=t)
    figures = health(console.server, sampler)
    assert figures["rates"]["commits"]["series"] == [[2000, 10.0], [3000, 30.0]]
    assert figures["backup"]["backlog_entries"] == 3
    assert figures["backup"]["problems"] == ["backup is 400 s behind"]
    assert figures["replica"] is None and figures["role"] == "primary"
    command = "denokv --sqlite-path ./restored.sqlite pitr restore"
    assert figures["restore_command"] == f"{command} --s3-bucket 'my bucket' --s3-prefix kv/"
    served = (await console.get("health")).json()
    assert served["recovery_points"][0]["to_versionstamp"] == "01" * 10
