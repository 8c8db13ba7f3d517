"""The console's API under input no page would send: a 4xx with a reason, never a 500.

Each case below was a 500 once: a key string with a lone surrogate, a numeric
property name in hex, a hex key that is no Deno KV key, an `expireIn` past the
last time a write may name, JSON fields of the wrong type, an import that is
not UTF-8. Two random walks follow, each the same on every run: requests to
every route built from pieces of key and value literals, and JSON bodies of
any shape. A bug that still gets through is logged and answered with the data
path's 500 text, through the same catch-all (`pipeline.error_reply`).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from denokv import texts as T
from denokv.engine import Engine
from denokv.keys import KeyCodecError, encode_key
from denokv.server.app import KvServer, ServerConfig

TOKEN = "console-fuzz-token-0123"
PIECES = [
    "[", "]", '"', "'", ",", "1", "1n", "-", "0x", "true", "null", "undefined",
    "new Uint8Array([1,2])", "\\u00", "\\", "NaN", "1e999", "[[]]", "{", "}", ":", "a", " ",
    "\u2028", "\x00", "9" * 30, "Infinity", "-0", "`", "new Date(1)", "new Map()",
    "Symbol()", "0n", "1.5n", '"\\ud800"', "{0x10: 1}",
]  # fmt: skip
TYPES = ["string", "number", "bigint", "boolean", "null", "undefined", "json", "bytes", "u64",
         "date", "literal", "Date", "Uint8Array", "KvU64", "nosuch", None, 5]  # fmt: skip


class Console:
    def __init__(self, http: httpx.AsyncClient, csrf: str) -> None:
        self.http = http
        self.headers = {"x-csrf-token": csrf}

    async def get(self, route: str, **params: str) -> httpx.Response:
        return await self.http.get(f"/console/api/{route}", params=params)

    async def post(self, route: str, body: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return await self.http.post(f"/console/api/{route}", content=body,
                                         headers=self.headers)  # fmt: skip
        return await self.http.post(f"/console/api/{route}", json=body, headers=self.headers)


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    engine = Engine(":memory:")
    server = KvServer(engine, ServerConfig(access_token=TOKEN, console="read-write"))
    transport = httpx.ASGITransport(app=server.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        signed = await http.post("/console/api/login", json={"token": TOKEN})
        yield Console(http, signed.json()["csrf"])
    engine.close()


def test_a_key_string_with_a_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(KeyCodecError, match=r"lone surrogate \\ud800"):
        encode_key(("a\ud800",))
    assert encode_key(("a\U0001f600",)) == b"\x02a\xf0\x9f\x98\x80\x00"  # a pair is fine


@pytest.mark.parametrize(
    ("route", "params", "says"),
    [
        ("entry", {"key_text": '["\\ud800"]'}, "Cannot read the key: a key string cannot hold"),
        ("entries", {"prefix": '["\\ud800"]'}, "Cannot read the prefix: a key string cannot"),
        ("export", {"prefix": "{0x0x"}, "Cannot read the prefix: expected ':'"),
        ("entry", {"key": "99" * 15}, "Cannot read the key: invalid tag 0x99"),
    ],
)
async def test_reads_of_keys_no_page_would_send(
    console: Console, route: str, params: dict[str, str], says: str
) -> None:
    reply = await console.get(route, **params)
    assert reply.status_code == 400, reply.text
    assert reply.text.startswith(says), reply.text


async def test_a_numeric_property_name_may_be_written_in_hex(console: Console) -> None:
    body = {"key_text": '["o"]', "type": "literal", "text": "{0x10: 1, 1_0: 2}", "expect": None}
    reply = await console.post("set", body)
    assert reply.status_code == 200, reply.text
    shown = (await console.get("entry", key_text='["o"]')).json()
    assert "16" in json.dumps(shown) and "10" in json.dumps(shown)


async def test_an_expiry_past_the_last_timestamp_is_refused(console: Console) -> None:
    body = {"key_text": '["e"]', "type": "string", "text": "x", "expect": None,
            "expire_in_ms": 10**30}  # fmt: skip
    reply = await console.post("set", body)
    assert (reply.status_code, reply.text) == (400, T.INVALID_EXPIRE_AT)
    assert (await console.get("entry", key_text='["e"]')).json()["absent"] is True


@pytest.mark.parametrize(
    ("route", "body", "says"),
    [
        ("import", b"\xff\xfe{not utf-8", "Nothing was imported: the file is not UTF-8 text."),
        ("watch", b'{"keys": "abcd"}', "keys must be a list."),
        ("watch", b'{"key_texts": 5}', "key_texts must be a list."),
        ("delete", b'{"key_text": 5, "expect": null}', "key_text must be a string"),
        ("set", b'{"key_text": ["a"], "type": "string", "text": "x", "expect": null}',
         "key_text must be a string"),
    ],
)  # fmt: skip
async def test_json_fields_of_the_wrong_type(
    console: Console, route: str, body: bytes, says: str
) -> None:
    reply = await console.post(route, body)
    assert reply.status_code == 400, reply.text
    assert reply.text.startswith(says), reply.text


async def test_an_unexpected_error_is_logged_and_answered_as_on_the_data_path(
    console: Console, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: object, key: bytes) -> object:
        raise RuntimeError("a bug in the console")

    monkeypatch.setattr("denokv.console.data.ConsoleData.entry", broken)
    reply = await console.get("entry", key_text='["a"]')
    assert (reply.status_code, reply.text) == (500, T.INTERNAL_ERROR)
    assert "x-content-type-options" in reply.headers  # the console's headers still apply
    assert any("a bug in the console" in str(r.exc_info) for r in caplog.records if r.exc_info)


def _junk(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))


async def _one(console: Console, rng: random.Random) -> httpx.Response:
    kind = rng.randrange(6)
    if kind == 0:
        names = ("prefix", "start", "after", "before", "limit")
        return await console.get("entries", **{n: _junk(rng) for n in names if rng.random() < 0.5})
    if kind == 1:
        return await console.get("entry", **{rng.choice(["key_text", "key"]): _junk(rng)})
    if kind == 2:
        return await console.post("set", {
            "key_text": _junk(rng), "type": rng.choice(TYPES), "text": _junk(rng),
            "expect": rng.choice([None, _junk(rng), "00", 5]),
            "expire_in_ms": rng.choice([None, 1, -1, 1.5, "x", 10**30]),
        })  # fmt: skip
    if kind == 3:
        return await console.post("delete", {"key_text": _junk(rng), "expect": _junk(rng)})
    if kind == 4:
        lines = [rng.choice([
            {"key": _junk(rng), "value": _junk(rng)},
            {"key": [_junk(rng)], "value": {"type": rng.choice(TYPES), "text": _junk(rng)}},
            _junk(rng), 5, None,
        ]) for _ in range(rng.randint(0, 3))]  # fmt: skip
        return await console.post("import", "\n".join(map(json.dumps, lines)).encode())
    return await console.get("export", prefix=_junk(rng))


def _any_json(rng: random.Random) -> Any:
    return rng.choice([None, True, 5, -1.5, _junk(rng), [_junk(rng)], {"a": 1}, [], {}])


@pytest.mark.parametrize("seed", [5, 6])
async def test_json_bodies_of_any_shape_get_an_answer_below_500(
    console: Console, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    rng = random.Random(seed)
    fields = ["key_text", "key", "type", "text", "expect", "expire_in_ms", "keys", "key_texts",
              "versionstamps", "token"]  # fmt: skip
    for _ in range(400):
        route = rng.choice(["set", "delete", "login"])  # a watch that opens would stream on
        body = {f: _any_json(rng) for f in fields if rng.random() < 0.5}
        reply = await console.post(route, body)
        assert reply.status_code < 500, (route, body, reply.status_code, reply.text)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_requests_get_an_answer_below_500(
    console: Console, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    rng = random.Random(seed)
    for _ in range(800):
        reply = await _one(console, rng)
        assert reply.status_code < 500, (reply.status_code, reply.text, reply.request.url,
                                         reply.request.content[:300])  # fmt: skip
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
