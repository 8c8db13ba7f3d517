"""Specification of the value codec (`denokv.values`).

Three sources of truth are used besides the codec itself: Python round trips,
bytes written by the real Deno 2.9 CLI (V8 format 16) and by Node 20's
`v8.serialize` (format 15, what `@deno/kv` stores), and the real Deno CLI
reading rows that Python encoded into a KV SQLite file.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import struct
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from v8serialize.constants import JSErrorName, JSRegExpFlag
from v8serialize.jstypes import (
    JSArray,
    JSArrayBuffer,
    JSBigInt,
    JSBigInt64Array,
    JSDataView,
    JSError,
    JSFloat16Array,
    JSFloat64Array,
    JSHole,
    JSInt16Array,
    JSMap,
    JSObject,
    JSRegExp,
    JSSet,
    JSUint8Array,
    JSUndefined,
)
from v8serialize.jstypes.jsbuffers import JSArrayBufferView

from denokv.keys import decode_key, encode_key
from denokv.values import BYTES, LE64, U64_MAX, V8, KvU64, decode_value, encode_value
from tests.support.deno import run_deno

NODE = shutil.which("node")
NODE_DIR = Path(__file__).resolve().parent / "node"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def roundtrip(value: object) -> object:
    return decode_value(*encode_value(value))


def sparse(length: int, items: dict[int, object]) -> JSArray:
    arr: JSArray = JSArray()
    arr[length - 1] = JSHole
    arr.update(items)
    return arr


def shape(x: object, seen: tuple[int, ...] = ()) -> object:
    """A canonical, type-strict form of a decoded value: JSBigInt(1), 1 and 1.0
    differ, NaN equals NaN, and dense vs sparse array storage does not matter."""
    if id(x) in seen:
        return ("cycle", len(seen) - seen.index(id(x)))
    inner = (*seen, id(x))
    if isinstance(x, JSArrayBufferView):
        return (type(x).__name__, x.get_buffer_as_memoryview().tobytes())
    # decode_value hands back plain dicts and lists for plain Objects and dense
    # Arrays; they compare equal to the v8serialize types they stand for.
    if isinstance(x, list):
        return ("JSArray", len(x), [(i, shape(v, inner)) for i, v in enumerate(x)], [])
    if isinstance(x, JSArray):
        items = [(i, shape(v, inner)) for i, v in x.array.elements().items()]
        props = [(k, shape(v, inner)) for k, v in x.properties.items()]
        return ("JSArray", len(x.array), items, props)
    if isinstance(x, dict | JSObject) and not isinstance(x, JSMap):
        return ("JSObject", [(str(k), shape(v, inner)) for k, v in x.items()])
    if isinstance(x, JSMap):
        return (type(x).__name__, [(shape(k), shape(v, inner)) for k, v in x.items()])
    if isinstance(x, JSSet):
        return ("JSSet", [shape(v, inner) for v in x])
    if isinstance(x, JSError):
        return ("JSError", str(x.name), x.message, x.stack, shape(x.cause, inner))
    if isinstance(x, float):
        return ("float", repr(x))  # keeps -0.0 and nan
    if isinstance(x, datetime):
        return ("datetime", x, x.tzinfo)  # same instant is not enough
    return (type(x).__name__, x)


def assert_same(actual: object, expected: object) -> None:
    assert shape(actual) == shape(expected)


# --- KvU64 -------------------------------------------------------------------


def test_kvu64_accepts_exactly_the_u64_range() -> None:
    assert int(KvU64(0)) == 0
    assert int(KvU64(U64_MAX)) == 2**64 - 1
    # Deno's RangeError texts; KvValidationError is a ValueError.
    with pytest.raises(ValueError, match="Value must be a positive bigint: received -1"):
        KvU64(-1)
    with pytest.raises(ValueError, match="Value must fit in a 64-bit unsigned integer"):
        KvU64(2**64)
    for wrong_type in (True, 1.0, "1"):
        with pytest.raises(TypeError):
            KvU64(wrong_type)  # type: ignore[arg-type]


def test_kvu64_is_an_immutable_hashable_value() -> None:
    a = KvU64(7)
    assert a == KvU64(7) and a != KvU64(8)
    assert a != 7  # a counter is not a plain number, as in Deno
    assert hash(a) == hash(KvU64(7)) and len({a, KvU64(7), KvU64(8)}) == 2
    assert repr(a) == "KvU64(7)"
    with pytest.raises(AttributeError):
        a._value = 9
    assert a.value == 7


def test_kvu64_is_stored_as_8_little_endian_bytes() -> None:
    assert encode_value(KvU64(1)) == (b"\x01" + b"\x00" * 7, LE64)
    assert encode_value(KvU64(U64_MAX)) == (b"\xff" * 8, LE64)
    assert decode_value(bytes.fromhex("0201000000000000"), LE64) == KvU64(258)
    for size in (0, 7, 9):
        with pytest.raises(ValueError, match="8 bytes"):
            decode_value(b"\x00" * size, LE64)


def test_kvu64_cannot_be_nested_inside_a_v8_value() -> None:
    with pytest.raises(TypeError, match="top-level"):
        encode_value({"n": KvU64(1)})


# --- encodings ---------------------------------------------------------------


def test_byte_strings_are_stored_raw_with_encoding_3() -> None:
    assert encode_value(b"\x00\xff") == (b"\x00\xff", BYTES)
    assert encode_value(bytearray(b"ab")) == (b"ab", BYTES)
    assert encode_value(memoryview(b"xyz")[1:]) == (b"yz", BYTES)
    assert encode_value(JSUint8Array(JSArrayBuffer(b"\x05"))) == (b"\x05", BYTES)
    assert decode_value(b"\x01\x02", BYTES) == b"\x01\x02"
    assert type(decode_value(bytearray(b"\x01"), BYTES)) is bytes


def test_other_values_are_v8_format_15() -> None:
    data, encoding = encode_value({"a": 1})
    assert encoding == V8
    assert data[:2] == b"\xff\x0f"  # format 15: Deno, Node and @deno/kv read it
    assert data[2:3] == b"o"  # a JS Object, not a Map


def test_unknown_encodings_and_versions_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="unknown value encoding 4"):
        decode_value(b"", 4)
    assert decode_value(bytes.fromhex("ff0d30"), V8) is None  # 13 is the oldest read
    assert decode_value(bytes.fromhex("ff1030"), V8) is None  # 16, as Deno 2.9 writes
    for version in ("0c", "11"):
        with pytest.raises(ValueError, match=f"version {int(version, 16)} "):
            decode_value(bytes.fromhex(f"ff{version}30"), V8)
    with pytest.raises(ValueError):
        decode_value(bytes.fromhex("ff0f22"), V8)  # truncated string


# --- Python round trips ------------------------------------------------------

ROUND_TRIPS: list[tuple[str, object, object]] = [
    # name, Python value, what decoding gives back
    ("none", None, None),
    ("undefined", JSUndefined, JSUndefined),
    ("bools", [True, False], JSArray([True, False])),
    ("small int is a number", 42, 42),
    ("negative int", -7, -7),
    ("int past 2**32", 2**40, 2**40),
    ("largest safe int", 2**53 - 1, 2**53 - 1),
    ("int past 2**53 becomes bigint", 2**53, JSBigInt(2**53)),
    ("negative huge int", -(2**70), JSBigInt(-(2**70))),
    ("JSBigInt stays bigint", JSBigInt(5), JSBigInt(5)),
    ("float", 1.5, 1.5),
    ("integral float comes back as int", 2.0, 2),
    ("negative zero", -0.0, -0.0),
    ("infinity", -math.inf, -math.inf),
    ("nan", math.nan, math.nan),
    ("unicode string", "héllo 日本 😀", "héllo 日本 😀"),
    ("lone surrogate", "a\ud800b", "a\ud800b"),
    ("dict with str keys is an Object", {"a": 1, "b": "x"}, JSObject(a=1, b="x")),
    ("empty dict is an Object", {}, JSObject()),
    ("dict with other keys is a Map", {1: "x", "y": 2}, JSMap([(1, "x"), ("y", 2)])),
    ("JSObject", JSObject(k=JSBigInt(1)), JSObject(k=JSBigInt(1))),
    ("JSMap with str keys stays a Map", JSMap([("a", 1)]), JSMap([("a", 1)])),
    ("list", [1, "a", None], JSArray([1, "a", None])),
    ("tuple", (1, 2), JSArray([1, 2])),
    ("holes", JSArray([1, JSHole, 3]), JSArray([1, JSHole, 3])),
    ("mostly holes", sparse(1000, {999: "z"}), sparse(1000, {999: "z"})),
    ("set", {1}, JSSet([1])),
    ("JSSet keeps order", JSSet(["b", "a"]), JSSet(["b", "a"])),
    (
        "nested",
        {"list": [{"deep": [2**60]}], "m": JSMap([(JSBigInt(1), None)])},
        JSObject(
            list=JSArray([JSObject(deep=JSArray([JSBigInt(2**60)]))]),
            m=JSMap([(JSBigInt(1), None)]),
        ),
    ),
    ("aware datetime", utc(2024, 1, 2, 3, 4, 5, 678000), utc(2024, 1, 2, 3, 4, 5, 678000)),
    (
        "datetime with offset comes back in UTC",
        datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        utc(2024, 1, 1, 10),
    ),
    ("naive datetime is UTC", datetime(1999, 12, 31, 23, 59), utc(1999, 12, 31, 23, 59)),
    ("sub-millisecond is truncated", utc(2024, 1, 1, 0, 0, 0, 999), utc(2024, 1, 1)),
    ("date before 1970", utc(1900, 1, 1, 0, 0, 0, 1000), utc(1900, 1, 1, 0, 0, 0, 1000)),
    ("nested bytes are a Uint8Array", {"b": b"\x00\x01"}, JSObject(b=b"\x00\x01")),
    ("nested bytearray", [bytearray(b"z")], JSArray([b"z"])),
    ("ArrayBuffer", JSArrayBuffer(b"ab"), JSArrayBuffer(b"ab")),
    # v8serialize gives a Python str pattern the `v` (unicode sets) flag
    ("regexp", re.compile("a+", re.IGNORECASE),
     JSRegExp("a+", JSRegExpFlag.IgnoreCase | JSRegExpFlag.UnicodeSets)),
    ("error", JSError("bad", name=JSErrorName.TypeError),
     JSError("bad", name=JSErrorName.TypeError)),
    ("top-level bytes", b"\x01", b"\x01"),
    ("top-level KvU64", KvU64(U64_MAX), KvU64(U64_MAX)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in ROUND_TRIPS], ids=[c[0] for c in ROUND_TRIPS]
)
def test_python_round_trip(value: object, expected: object) -> None:
    assert_same(roundtrip(value), expected)


def test_typed_arrays_round_trip() -> None:
    arr = JSInt16Array(JSArrayBuffer(struct.pack("<3h", -1, 2, 300)))
    assert_same(roundtrip(arr), arr)


def test_cycles_and_shared_objects_keep_their_identity() -> None:
    d: dict[str, object] = {"n": 1}
    d["self"] = d
    back = roundtrip(d)
    assert isinstance(back, JSObject) and back["self"] is back
    shared = {"s": 1}
    pair = roundtrip([shared, shared])
    assert isinstance(pair, list) and pair[0] is pair[1]  # one dict, referenced twice


# --- bytes written by the real runtimes --------------------------------------

EXPECTED_FROM_JS: dict[str, object] = {
    # name in tests/node/values_cases.mjs -> decode_value of what the runtime stored
    "str_ascii": "hello",
    "str_empty": "",
    "str_latin1": "café ÿ",
    "str_bmp": "日本語 Ж",
    "str_emoji": "hi 😀!",
    "str_lone_surrogate": "a\ud800b",
    "num_zero": 0,
    "num_neg_zero": -0.0,
    "num_int": 42,
    "num_neg_int": -7,
    "num_int32_max": 2147483647,
    "num_int32_over": 2147483648,
    "num_safe_max": 2**53 - 1,
    "num_double": 3.25,
    "num_nan": math.nan,
    "num_inf": math.inf,
    "num_neg_inf": -math.inf,
    "bigint_zero": JSBigInt(0),
    "bigint_small": JSBigInt(5),
    "bigint_neg": JSBigInt(-12345678901234567890),
    "bigint_u64_max": JSBigInt(2**64 - 1),
    "bigint_huge": JSBigInt(2**200 + 1),
    "true": True,
    "false": False,
    "null": None,
    "undefined": JSUndefined,
    "object": JSObject(a=1, b="two", c=JSArray([True, None])),
    "object_int_keys": JSObject({0: "zero", 1: "one", "b": 2}),
    "object_nested": JSObject(
        outer=JSObject(inner=JSObject(deep=JSArray([1, JSObject(x=JSBigInt(2))])))
    ),
    "object_empty": JSObject(),
    "array": JSArray([1, "a", None, JSUndefined, 2.5]),
    "array_empty": JSArray(),
    "array_sparse": sparse(11, {0: 1, 2: 3, 10: "x"}),
    "array_holes_only": sparse(5, {}),
    "array_large_sparse": sparse(2000, {1500: 1}),
    "array_with_prop": JSArray([1, 2], extra=True),
    "shared_refs": JSArray([JSObject(s=1), JSObject(s=1)]),
    "date": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    "date_epoch": datetime(1970, 1, 1, tzinfo=UTC),
    "map": JSMap([("k", 1), (2, "v"), (JSBigInt(3), JSObject(z=True))]),
    "set": JSSet([1, "two", JSBigInt(3)]),
    "regexp": JSRegExp("ab+c", JSRegExpFlag.Global | JSRegExpFlag.IgnoreCase),
    "regexp_flags": JSRegExp("x", JSRegExpFlag(0b111100)),  # m, s, u, y
    "u8_in_object": JSObject(data=b"\x01\x02\xff"),
    "uint8array_empty": JSObject(u=b""),
    "arraybuffer": JSArrayBuffer(b"\x09\x08\x07"),
    "rab_small": JSArrayBuffer(b"\x00\x00", max_byte_length=16),
    "int16array": JSInt16Array(JSArrayBuffer(struct.pack("<3h", -1, 2, 300))),
    "float64array": JSFloat64Array(JSArrayBuffer(struct.pack("<3d", 1.5, -0.0, math.nan))),
    "bigint64array": JSBigInt64Array(JSArrayBuffer(struct.pack("<2q", -1, 2))),
    "dataview": JSDataView(JSArrayBuffer(b"\x02\x03")),
    "subarray": b"\x02\x03",
    "error": JSError("boom"),
    "type_error": JSError("bad type", name=JSErrorName.TypeError),
    "range_error": JSError("out", name=JSErrorName.RangeError),
    "error_cause": JSError("outer", cause="inner"),
    "boxed_number": 1.5,
    "boxed_string": "boxed",
    "boxed_true": True,
    "boxed_false": False,
    "boxed_bigint": JSBigInt(7),
}  # fmt: skip
SPECIAL = {"cyclic", "date_invalid"}  # checked by their own tests
# Node writes typed arrays as host objects, Deno as ArrayBuffer + view tags.
VIEWS = {"u8_in_object", "uint8array_empty", "int16array", "float64array", "bigint64array",
         "dataview", "subarray"}  # fmt: skip


def _rows(db: Path) -> dict[str, tuple[bytes, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select k, v, v_encoding from kv").fetchall()
    return {str(decode_key(k)[1]): (bytes(v), enc) for k, v, enc in rows}


@pytest.fixture(scope="module")
def deno_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, int]]:
    db = tmp_path_factory.mktemp("values") / "from-deno.sqlite"
    names = run_deno("values_write.ts", str(db))
    rows = _rows(db)
    assert sorted(rows) == sorted(names)
    return rows


@pytest.fixture(scope="module")
def node_bytes() -> dict[str, bytes]:
    if NODE is None:
        pytest.skip("Node.js is not installed")
    proc = subprocess.run(
        [NODE, str(NODE_DIR / "values_serialize.mjs")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {k: bytes.fromhex(v) for k, v in json.loads(proc.stdout).items()}


@pytest.mark.node
def test_the_expectations_cover_every_shared_case(node_bytes: dict[str, bytes]) -> None:
    assert set(node_bytes) == set(EXPECTED_FROM_JS) | SPECIAL


@pytest.mark.deno
@pytest.mark.parametrize("name", sorted(EXPECTED_FROM_JS))
def test_decodes_what_deno_stored(deno_rows: dict[str, tuple[bytes, int]], name: str) -> None:
    data, encoding = deno_rows[name]
    if encoding == V8:
        assert data[:2] == b"\xff\x10"  # Deno 2.9 writes format 16
    assert_same(decode_value(data, encoding), EXPECTED_FROM_JS[name])


@pytest.mark.node
@pytest.mark.parametrize("name", sorted(EXPECTED_FROM_JS))
def test_decodes_what_node_serialized(node_bytes: dict[str, bytes], name: str) -> None:
    assert node_bytes[name][:2] == b"\xff\x0f"
    assert_same(decode_value(node_bytes[name], V8), EXPECTED_FROM_JS[name])


@pytest.mark.deno
@pytest.mark.node
def test_format_16_differs_from_15_only_in_the_header(
    deno_rows: dict[str, tuple[bytes, int]], node_bytes: dict[str, bytes]
) -> None:
    compared = sorted(set(node_bytes) - VIEWS)
    assert len(compared) > 50
    for name in compared:
        assert deno_rows[name][0][2:] == node_bytes[name][2:], name
    # Views are the exception, but because Node uses its host-object form:
    assert node_bytes["int16array"][2] == ord("\\") and deno_rows["int16array"][0][2] == ord("B")


@pytest.mark.deno
def test_deno_only_values(deno_rows: dict[str, tuple[bytes, int]]) -> None:
    assert deno_rows["u64"][1] == LE64 and decode_value(*deno_rows["u64"]) == KvU64(123)
    assert decode_value(*deno_rows["u64_max"]) == KvU64(U64_MAX)
    assert deno_rows["u8_top"] == (b"\x01\x02", BYTES)
    f16 = decode_value(*deno_rows["float16array"])
    assert isinstance(f16, JSFloat16Array)
    with f16.get_buffer() as items:
        assert items.tolist() == [1.5, -2.0]


@pytest.mark.deno
def test_format_16_lengths_wider_than_32_bits(deno_rows: dict[str, tuple[bytes, int]]) -> None:
    data, _ = deno_rows["rab_huge_max"]
    assert data == bytes.fromhex("ff10 7e 03 8080808020 000000")  # maxByteLength 2**33
    assert_same(decode_value(data, V8), JSArrayBuffer(b"\x00" * 3, max_byte_length=2**33))
    # The same field is a uint32 before format 16.
    with pytest.raises(ValueError):
        decode_value(b"\xff\x0f" + data[2:], V8)


@pytest.mark.deno
def test_cyclic_object_from_deno(deno_rows: dict[str, tuple[bytes, int]]) -> None:
    value = decode_value(*deno_rows["cyclic"])
    assert isinstance(value, JSObject) and value["name"] == "loop" and value["self"] is value


@pytest.mark.deno
def test_invalid_date_is_a_clear_error(deno_rows: dict[str, tuple[bytes, int]]) -> None:
    with pytest.raises(ValueError, match="Invalid Date"):
        decode_value(*deno_rows["date_invalid"])


# --- Deno reads what Python wrote --------------------------------------------


def n(x: object) -> dict[str, object]:
    return {"number": x}


cyclic: dict[str, object] = {"n": 1}
cyclic["self"] = cyclic

PYTHON_TO_DENO: list[tuple[str, object, object]] = [
    # name, Python value, how tests/deno/values_read.ts describes what Deno read
    ("int", 42, n(42)),
    ("int_neg", -7, n(-7)),
    ("int_2_32", 2**32, n(2**32)),
    ("int_safe_max", 2**53 - 1, n(2**53 - 1)),
    ("int_past_safe", 2**53, {"bigint": str(2**53)}),
    ("int_neg_huge", -(2**70), {"bigint": str(-(2**70))}),
    ("jsbigint", JSBigInt(5), {"bigint": "5"}),
    ("float", 1.5, n(1.5)),
    ("neg_zero", -0.0, n("-0")),
    ("nan", math.nan, n("NaN")),
    ("inf", math.inf, n("Infinity")),
    ("str", "héllo 😀", "héllo 😀"),
    ("str_lone_surrogate", "a\ud800b", "a\ud800b"),
    ("true", True, True),
    ("null", None, None),
    ("undefined", JSUndefined, {"undefined": True}),
    ("dict", {"a": 1, "b": [True, None]},
     {"object": [["a", n(1)], ["b", {"array": [True, None]}]]}),
    ("dict_int_keys", {1: "x"}, {"map": [[n(1), "x"]]}),
    ("jsobject", JSObject(k=JSBigInt(1)), {"object": [["k", {"bigint": "1"}]]}),
    ("jsmap", JSMap([("a", 1)]), {"map": [["a", n(1)]]}),
    ("tuple", (1, "a"), {"array": [n(1), "a"]}),
    ("holes", JSArray([1, JSHole, 3]), {"sparse": 3, "items": [[0, n(1)], [2, n(3)]]}),
    ("set", JSSet(["b", "a"]), {"set": ["b", "a"]}),
    ("datetime", utc(2024, 1, 2, 3, 4, 5, 678999), {"date": "2024-01-02T03:04:05.678Z"}),
    ("datetime_naive", datetime(2000, 1, 1), {"date": "2000-01-01T00:00:00.000Z"}),
    ("datetime_offset", datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
     {"date": "2024-01-01T10:00:00.000Z"}),
    ("nested_bytes", {"data": b"\x01\x02"}, {"object": [["data", {"u8": [1, 2]}]]}),
    ("arraybuffer", JSArrayBuffer(b"ab"), {"arraybuffer": [97, 98]}),
    ("int16array", JSInt16Array(JSArrayBuffer(struct.pack("<3h", -1, 2, 300))),
     {"typed": "Int16Array", "items": [n(-1), n(2), n(300)]}),
    ("regexp", re.compile("a+b", re.IGNORECASE), {"regexp": "a+b", "flags": "iv"}),
    ("jsregexp", JSRegExp("x", JSRegExpFlag.Global), {"regexp": "x", "flags": "g"}),
    ("error", JSError("boom", name=JSErrorName.TypeError),
     {"error": "TypeError", "message": "boom"}),
    ("cyclic", cyclic, {"object": [["n", n(1)], ["self", {"cycle": 1}]]}),
    ("top_bytes", b"\x00\xff", {"u8": [0, 255]}),
    ("u64", KvU64(U64_MAX), {"u64": str(U64_MAX)}),
]  # fmt: skip


@pytest.mark.deno
def test_deno_reads_what_python_encoded(tmp_path: Path) -> None:
    db = tmp_path / "from-python.sqlite"
    assert run_deno("values_read.ts", str(db)) == []  # lets Deno create the schema
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "insert into kv (k, v, v_encoding, version, seq, expiration_ms)"
            " values (?, ?, ?, ?, 0, -1)",
            [(encode_key(("v", name)), *encode_value(value), i + 1)
             for i, (name, value, _) in enumerate(PYTHON_TO_DENO)],
        )  # fmt: skip
    seen = dict(run_deno("values_read.ts", str(db)))
    for name, _, expected in PYTHON_TO_DENO:
        assert seen[name] == expected, name
    assert len(seen) == len(PYTHON_TO_DENO)
