"""Specification tests for the server-side V8 sum (KV_FACTS §4.3 error table, §4.4).

V8 bytes come from three sources: `v8serialize.dumps` (an independent encoder),
hand-written byte strings as real V8 writes them (padded bigints, format 16
headers), and this module's own encoders, whose output is checked byte for
byte and also decoded by `v8serialize.loads`.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
import v8serialize
from hypothesis import given, settings
from hypothesis import strategies as st
from v8serialize.jstypes import JSBigInt

from denokv.v8_sum import (
    BYTES,
    LE64,
    V8,
    SumError,
    UnsupportedV8Value,
    decode_v8_number,
    encode_v8_bigint,
    encode_v8_double,
    v8_sum,
)

U64_MAX = 2**64 - 1

BAD_PARAMS = "Some of the parameters are not valid V8 values"
BOUND_TYPES = "Min/max parameters have different types than the operand"
OUT_OF_RANGE = "The result of a Sum operation would exceed its range limit"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def big(n: int) -> bytes:
    """A bigint as serialised by v8serialize (not this module)."""
    return v8serialize.dumps(JSBigInt(n))


def num(x: float) -> bytes:
    """A JS number stored as a V8 Double, serialised by v8serialize."""
    return v8serialize.dumps(float(x))


def le64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def dbl(x: float) -> str:
    return struct.pack("<d", x).hex()


def js(data: bytes) -> object:
    """What an independent V8 decoder makes of the server's output."""
    value = v8serialize.loads(data)
    return int(value) if isinstance(value, JSBigInt) else value


def summed(
    stored: tuple[bytes, int] | None,
    operand: bytes,
    *,
    enc: int = V8,
    lo: bytes = b"",
    hi: bytes = b"",
    clamp: bool = False,
) -> tuple[bytes, int]:
    return v8_sum(stored, operand, enc, lo, hi, clamp)


def sum_error(stored: tuple[bytes, int] | None, operand: bytes, **kw: Any) -> str:
    with pytest.raises(SumError) as info:
        summed(stored, operand, **kw)
    return str(info.value)


# Real V8 (Deno/Node) pads bigint magnitudes to whole 8-byte digits.
REAL_V8_ONE = h("ff0f5a10" + "0100000000000000")
REAL_V8_ZERO = h("ff0f5a00")
REAL_V8_MINUS_ONE = h("ff0f5a11" + "0100000000000000")


# --- Decoding V8 numbers ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (REAL_V8_ONE, 1),
        (REAL_V8_ZERO, 0),
        (REAL_V8_MINUS_ONE, -1),
        (h("ff0f5a0200"), 0),  # the server's own zero
        (h("ff0f5a0201"), 1),
        (h("ff0f5a0301"), -1),
        (h("ff0f5a04" + "0001"), 256),
        (h("ff0f5a8001" + "ff" * 64), 2 ** (8 * 64) - 1),  # two-byte length varint
        (h("ff104e" + dbl(1.5)), 1.5),  # format 16 (Deno 2.9)
        (h("ff105a100100000000000000"), 1),
        (h("ff0e4e" + dbl(-2.0)), -2.0),  # format 14
        (h("ff0d4e" + dbl(3.0)), 3.0),  # format 13
        (h("ff0f4902"), 1.0),  # Int32, zigzag
        (h("ff0f4901"), -1.0),
        (h("ff0f49feffffff0f"), 2147483647.0),
        (h("ff0f49ffffffff0f"), -2147483648.0),
        (h("ff0f55ffffffff0f"), 4294967295.0),  # Uint32
        (h("ff0f00005a0201"), 1),  # padding before the tag
        (h("ff0f3f005a0201"), 1),  # '?' verify-object-count prefix
        (h("ff0f3f8101004e" + dbl(0.25)), 0.25),  # '?' with a 2-byte count, then padding
    ],
)
def test_decode_accepts_v8_numbers(data: bytes, expected: int | float) -> None:
    value = decode_v8_number(data)
    assert value == expected
    # bigint -> int, every flavour of number -> float
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "value", [0, 1, -1, 2**31 - 1, -(2**31), 2**31, 2**32 - 1, 2**32, 2**70, -(2**70)]
)
def test_decode_reads_what_v8serialize_writes_for_ints(value: int) -> None:
    # v8serialize picks Int32 / Uint32 for small ints: those are JS numbers.
    data = v8serialize.dumps(value)
    expected: int | float = value if data[2] == ord("Z") else float(value)
    assert decode_v8_number(data) == expected
    assert type(decode_v8_number(data)) is type(expected)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**600), max_value=2**600))
def test_bigints_round_trip_through_both_codecs(n: int) -> None:
    assert decode_v8_number(big(n)) == n
    assert js(encode_v8_bigint(n)) == n
    assert decode_v8_number(encode_v8_bigint(n)) == n


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False))
def test_doubles_round_trip_through_both_codecs(x: float) -> None:
    assert decode_v8_number(num(x)) == x
    assert encode_v8_double(x) == num(x)  # identical bytes for doubles
    assert math.copysign(1.0, decode_v8_number(encode_v8_double(x))) == math.copysign(1.0, x)


@pytest.mark.parametrize(
    ("n", "layout"),
    [
        (0, "ff0f5a0200"),  # zero: byteLen 1, one 00 byte
        (1, "ff0f5a0201"),
        (-1, "ff0f5a0301"),
        (255, "ff0f5a02ff"),  # minimal: no extra sign byte
        (256, "ff0f5a040001"),
        (-256, "ff0f5a050001"),
        (U64_MAX, "ff0f5a10" + "ff" * 8),
        (2**64, "ff0f5a12" + "00" * 8 + "01"),
        (2 ** (8 * 64) - 1, "ff0f5a8001" + "ff" * 64),
    ],
)
def test_encode_bigint_layout(n: int, layout: str) -> None:
    assert encode_v8_bigint(n) == h(layout)


def test_encode_double_layout() -> None:
    assert encode_v8_double(1.5) == h("ff0f4e000000000000f83f")
    assert encode_v8_double(-0.0) == h("ff0f4e0000000000000080")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        h("ff"),  # header without version
        h("0f4e" + dbl(1.0)),  # no 0xFF header
        h("ff0c4e" + dbl(1.0)),  # format 12: too old
        h("ff114e" + dbl(1.0)),  # format 17: unknown
        h("ff0f"),  # no value
        h("ff0f0000"),  # only padding
        h("ff0f3f"),  # object count without its varint
        h("ff0f5a"),  # bigint without bitfield
        h("ff0f5a0401"),  # bigint magnitude cut short
        h("ff0f4e" + "00" * 7),  # double cut short
        h("ff0f4e" + "00" * 9),  # trailing byte
        h("ff0f5a020100"),  # trailing padding
        h("ff0f49"),  # int32 without varint
        h("ff0f49ff"),  # unterminated varint
        h("ff0f55ffffffff1f"),  # varint above uint32
        h("ff0f55808080808000"),  # zero, but as a varint longer than 5 bytes
        h("ff0f01"),  # not a V8 tag
        h("ff0f5e00"),  # object back-reference cannot start a value
    ],
)
def test_decode_rejects_malformed_bytes(data: bytes) -> None:
    with pytest.raises(ValueError) as info:
        decode_v8_number(data)
    assert not isinstance(info.value, UnsupportedV8Value)


@pytest.mark.parametrize(
    "data",
    [
        v8serialize.dumps("abc"),
        v8serialize.dumps(None),
        v8serialize.dumps(True),
        v8serialize.dumps({"a": 1}),
        v8serialize.dumps([1]),
        h("ff0f5f"),  # undefined
        h("ff0f6e" + dbl(1.0)),  # new Number(1)
        h("ff0f7a0201"),  # Object(1n)
    ],
)
def test_decode_reports_other_values_as_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedV8Value):
        decode_v8_number(data)


# --- Absent key: the operand is stored as the server re-serialises it --------


@pytest.mark.parametrize(
    ("operand", "stored"),
    [
        (v8serialize.dumps(-1), encode_v8_double(-1.0)),  # Int32 -> Double
        (v8serialize.dumps(7), encode_v8_double(7.0)),  # Uint32 -> Double
        (h("ff104e" + dbl(2.5)), h("ff0f4e" + dbl(2.5))),  # rewritten as format 15
        (REAL_V8_ONE, h("ff0f5a0201")),  # padding dropped
        (REAL_V8_ZERO, h("ff0f5a0200")),
        (big(2**70), encode_v8_bigint(2**70)),
    ],
)
def test_absent_key_stores_reserialised_operand(operand: bytes, stored: bytes) -> None:
    assert summed(None, operand) == (stored, V8)


def test_int32_operand_is_stored_as_double_bytes() -> None:
    data, encoding = summed(None, h("ff0f4901"))  # Int32 -1
    assert (data, encoding) == (h("ff0f4e000000000000f0bf"), V8)
    assert js(data) == -1.0


@pytest.mark.parametrize("clamp", [False, True])
def test_absent_key_ignores_bounds(clamp: bool) -> None:
    assert summed(None, big(10), hi=big(5), clamp=clamp) == (encode_v8_bigint(10), V8)
    assert summed(None, num(-3), lo=num(0), clamp=clamp) == (encode_v8_double(-3.0), V8)


# --- Sums of like types ------------------------------------------------------


def test_bigint_plus_bigint_is_exact() -> None:
    data, encoding = summed((big(2**100), V8), big(1))
    assert encoding == V8
    assert data == encode_v8_bigint(2**100 + 1)
    assert js(data) == 2**100 + 1


def test_bigint_sum_reads_real_v8_padding_and_writes_minimal() -> None:
    assert summed((REAL_V8_ONE, V8), REAL_V8_ZERO) == (h("ff0f5a0201"), V8)
    assert summed((REAL_V8_ONE, V8), REAL_V8_MINUS_ONE) == (h("ff0f5a0200"), V8)


def test_number_plus_number_is_f64_addition() -> None:
    data, encoding = summed((num(0.1), V8), num(0.2))
    assert (data, encoding) == (encode_v8_double(0.1 + 0.2), V8)
    assert js(data) == 0.30000000000000004


def test_int32_and_uint32_are_numbers() -> None:
    stored = (v8serialize.dumps(5), V8)  # Uint32 5
    assert summed(stored, num(2.5)) == (encode_v8_double(7.5), V8)
    assert summed(stored, h("ff0f4901")) == (encode_v8_double(4.0), V8)


def test_version_16_stored_value_is_summed() -> None:
    assert summed((h("ff104e" + dbl(1.5)), V8), num(1)) == (encode_v8_double(2.5), V8)
    assert summed((h("ff105a100200000000000000"), V8), big(3)) == (encode_v8_bigint(5), V8)


@settings(max_examples=200, deadline=None)
@given(st.integers(), st.integers())
def test_bigint_sum_property(a: int, b: int) -> None:
    data, encoding = summed((big(a), V8), big(b))
    assert encoding == V8
    assert js(data) == a + b


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_number_sum_property(a: float, b: float) -> None:
    data, _ = summed((num(a), V8), num(b))
    assert data == encode_v8_double(a + b)


# --- KvU64 (LE64) stored values: backward-compatible wrap --------------------


@pytest.mark.parametrize(
    ("old", "delta", "new"),
    [
        (5, 7, 12),
        (U64_MAX, 1, 0),  # wraps mod 2^64
        (1, U64_MAX, 0),  # largest accepted operand
        (9, 0, 9),
    ],
)
def test_kvu64_plus_u64_range_bigint_wraps(old: int, delta: int, new: int) -> None:
    assert summed((le64(old), LE64), big(delta)) == (le64(new), LE64)


def test_kvu64_accepts_real_v8_padded_bigint() -> None:
    assert summed((le64(U64_MAX), LE64), REAL_V8_ONE) == (le64(0), LE64)


@pytest.mark.parametrize(
    "kw",
    [
        {"operand": big(-1)},
        {"operand": big(2**64)},
        {"operand": big(1), "lo": big(0)},
        {"operand": big(1), "hi": big(100)},
        {"operand": big(1), "clamp": True},
    ],
)
def test_kvu64_rejects_other_bigint_sums(kw: dict[str, Any]) -> None:
    kw = dict(kw)
    operand = kw.pop("operand")
    assert sum_error((le64(1), LE64), operand, **kw) == "Cannot sum KvU64 with BigInt"


def test_kvu64_rejects_numbers() -> None:
    assert sum_error((le64(1), LE64), num(1)) == "Cannot sum KvU64 with Number"


# --- Type mismatches ---------------------------------------------------------


def test_bigint_with_number_names_old_then_operand() -> None:
    assert sum_error((big(1), V8), num(1)) == "Cannot sum BigInt with Number"
    assert sum_error((num(1), V8), big(1)) == "Cannot sum Number with BigInt"
    assert sum_error((v8serialize.dumps(3), V8), big(1)) == "Cannot sum Number with BigInt"


@pytest.mark.parametrize(
    ("operand", "lo", "hi"),
    [
        (big(1), num(0), b""),
        (big(1), b"", num(9)),
        (num(1), big(0), b""),
        (num(1), num(0), big(9)),
        (h("ff0f4902"), b"", big(9)),  # Int32 is a Number
    ],
)
def test_bounds_must_have_the_operand_type(operand: bytes, lo: bytes, hi: bytes) -> None:
    # Checked before the stored value is even looked at.
    assert sum_error(None, operand, lo=lo, hi=hi) == BOUND_TYPES
    assert sum_error((b"raw", BYTES), operand, lo=lo, hi=hi) == BOUND_TYPES


# --- Invalid parameters ------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"operand": b""},
        {"operand": h("0102")},
        {"operand": h("ff0f4e0000")},
        {"operand": v8serialize.dumps("1")},
        {"operand": h("ff0f6e" + dbl(1.0))},  # Number object
        {"operand": h("ff0f7a0201")},  # BigInt object
        {"operand": big(1), "enc": BYTES},  # valid V8 bytes, but marked BYTES
        {"operand": big(1), "lo": h("ff0f")},
        {"operand": big(1), "hi": v8serialize.dumps(None)},
        {"operand": num(1), "lo": v8serialize.dumps("0")},
    ],
)
def test_invalid_parameters(kw: dict[str, Any]) -> None:
    kw = dict(kw)
    operand = kw.pop("operand")
    assert sum_error(None, operand, **kw) == BAD_PARAMS
    # Parameters are validated before the stored value.
    assert sum_error((b"", V8), operand, **kw) == BAD_PARAMS


# --- Stored values the V8 sum cannot use -------------------------------------


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ((b"\x01\x02", BYTES), "unsupported value type"),
        ((big(1), BYTES), "unsupported value type"),
        ((v8serialize.dumps("abc"), V8), "unsupported value type"),
        ((v8serialize.dumps({"n": 1}), V8), "unsupported value type"),
        ((h("ff0f7a0201"), V8), "unsupported value type"),  # Object(1n)
        ((h("0102"), V8), "invalid v8 value"),
        ((h("ff0f4e0000"), V8), "invalid v8 value"),
        ((h("ff0c4e" + dbl(1.0)), V8), "invalid v8 value"),
        ((b"", V8), "operand cannot be empty"),
        # Unreachable through the API (values are validated on the way in):
        ((b"\x01" * 7, LE64), "Invalid sum operand"),
        ((big(1), 4), "Invalid sum operand"),
    ],
)
def test_unusable_stored_values(stored: tuple[bytes, int], message: str) -> None:
    assert sum_error(stored, big(1)) == message
    assert sum_error(stored, num(1)) == message


# --- Bounds and clamping -----------------------------------------------------


def test_bigint_below_min() -> None:
    stored = (big(5), V8)
    assert sum_error(stored, big(-10), lo=big(0)) == OUT_OF_RANGE
    assert summed(stored, big(-10), lo=big(0), clamp=True) == (encode_v8_bigint(0), V8)


def test_bigint_above_max() -> None:
    stored = (big(5), V8)
    assert sum_error(stored, big(10), hi=big(12)) == OUT_OF_RANGE
    assert summed(stored, big(10), hi=big(12), clamp=True) == (encode_v8_bigint(12), V8)


def test_result_equal_to_a_bound_is_in_range() -> None:
    stored = (big(5), V8)
    assert summed(stored, big(7), lo=big(12), hi=big(12)) == (encode_v8_bigint(12), V8)


def test_min_is_applied_before_max() -> None:
    # With min > max a clamped result always ends at max: min ran first.
    result = summed((big(5), V8), big(0), lo=big(10), hi=big(0), clamp=True)
    assert result == (encode_v8_bigint(0), V8)
    assert sum_error((big(5), V8), big(0), lo=big(10), hi=big(0)) == OUT_OF_RANGE


def test_number_bounds_and_clamp() -> None:
    stored = (num(1.5), V8)
    assert sum_error(stored, num(-2), lo=num(0)) == OUT_OF_RANGE
    assert summed(stored, num(-2), lo=num(0), clamp=True) == (encode_v8_double(0.0), V8)
    assert sum_error(stored, num(9), hi=num(10)) == OUT_OF_RANGE
    assert summed(stored, num(9), hi=num(10), clamp=True) == (encode_v8_double(10.0), V8)
    # Int32/Uint32 bounds are Numbers too.
    lo_int32 = v8serialize.dumps(-1)
    assert summed(stored, num(-5), lo=lo_int32, clamp=True) == (encode_v8_double(-1.0), V8)


def test_infinity_is_clamped_like_any_number() -> None:
    stored = (num(1e308), V8)
    assert sum_error(stored, num(1e308), hi=num(1e308)) == OUT_OF_RANGE
    assert summed(stored, num(1e308), hi=num(5), clamp=True) == (encode_v8_double(5.0), V8)


@pytest.mark.parametrize("clamp", [False, True])
def test_nan_never_triggers_a_bound(clamp: bool) -> None:
    for stored, operand in [(num(math.nan), num(1)), (num(math.inf), num(-math.inf))]:
        data, encoding = summed((stored, V8), operand, lo=num(0), hi=num(10), clamp=clamp)
        assert encoding == V8
        assert data[:3] == h("ff0f4e")
        assert math.isnan(decode_v8_number(data))
