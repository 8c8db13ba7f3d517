"""Specification tests for the key codec (KV_FACTS §1).

Round trips and ordering are checked with hypothesis against an independent
model of the logical order (§1.4); the worked encodings of §1.2.1 and §1.3
are checked byte for byte.
"""

from __future__ import annotations

import math
import struct
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from denokv.keys import KeyCodecError, KeyPart, KvInt, KvNumber, decode_key, encode_key

KeyTuple = tuple[KeyPart, ...]
Comparable = TypeVar("Comparable", bytes, tuple[Any, ...])

MAX_INT = 256**255 - 1  # largest magnitude that fits in 255 bytes


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def float_from_bits(bits: int) -> float:
    value: float = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    return value


NEG_NAN = float_from_bits(0xFFF8_0000_0000_0000)


# --- Strategies --------------------------------------------------------------

# Small alphabets make shared prefixes (and escaped zero bytes) common.
byte_parts = st.lists(st.sampled_from([0x00, 0x01, 0x61, 0xFE, 0xFF]), max_size=5).map(bytes)
str_parts = st.text(alphabet=st.sampled_from(["\x00", "a", "b", "é", "\U0001f600"]), max_size=5)
int_parts = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=-MAX_INT, max_value=MAX_INT),
    st.sampled_from([2**64 - 1, 2**64, -(2**64), 256**8, -(256**8), MAX_INT, -MAX_INT]),
)
float_parts = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, NEG_NAN, 1.0, -1.0]),
    # NaNs with payloads, both signs
    st.integers(min_value=1, max_value=2**51 - 1).flatmap(
        lambda payload: st.sampled_from(
            [
                float_from_bits(0x7FF8_0000_0000_0000 | payload),
                float_from_bits(0xFFF8_0000_0000_0000 | payload),
            ]
        )
    ),
)
parts = st.one_of(byte_parts, str_parts, int_parts, float_parts, st.booleans())
keys = st.lists(parts, max_size=4).map(tuple)


@st.composite
def key_pairs(draw: st.DrawFn) -> tuple[KeyTuple, KeyTuple]:
    """Two keys that often share a prefix, so later parts decide the order."""
    a = draw(keys)
    shared = draw(st.integers(min_value=0, max_value=len(a)))
    b = a[:shared] + draw(keys)
    return a, b


# --- Independent model of §1.4 -----------------------------------------------


def logical(part: object) -> tuple[Any, ...]:
    """Sort key for one part following the stated rules, not the encoder's tricks."""
    if part is False:
        return (4,)
    if part is True:
        return (5,)
    if isinstance(part, bytes):
        return (0, part)
    if isinstance(part, str):
        return (1, part.encode("utf-8"))
    if isinstance(part, int):
        return (2, part)
    assert isinstance(part, float)
    if math.isnan(part):
        return (3, 2 if math.copysign(1.0, part) > 0 else 0)
    # -0.0 == 0.0 numerically; the sign breaks the tie.
    return (3, 1, part, math.copysign(1.0, part))


def logical_key(key: KeyTuple) -> tuple[tuple[Any, ...], ...]:
    return tuple(logical(p) for p in key)  # tuple order is prefix-shorter-first


def same_part(a: object, b: object) -> bool:
    """Equality that tells True from 1, -0.0 from 0.0, and NaN signs apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b) and math.copysign(1, a) == math.copysign(1, b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def cmp(x: Comparable, y: Comparable) -> int:
    return (x > y) - (x < y)


# --- Properties --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(keys)
def test_decode_inverts_encode(key: KeyTuple) -> None:
    decoded = decode_key(encode_key(key))
    assert len(decoded) == len(key)
    assert all(same_part(a, b) for a, b in zip(decoded, key, strict=True)), (decoded, key)


@settings(max_examples=300, deadline=None)
@given(key_pairs())
def test_byte_order_is_logical_order(pair: tuple[KeyTuple, KeyTuple]) -> None:
    a, b = pair
    assert cmp(encode_key(a), encode_key(b)) == cmp(logical_key(a), logical_key(b))


@settings(max_examples=200, deadline=None)
@given(keys, parts)
def test_extensions_of_a_prefix_lie_in_its_range(prefix: KeyTuple, last: KeyPart) -> None:
    p = encode_key(prefix)
    assert p + b"\x00" <= encode_key((*prefix, last)) < p + b"\xff"


def test_nan_is_canonicalised() -> None:
    payload_nan = float_from_bits(0x7FF0_0000_0000_0001)  # a signalling NaN
    neg_payload_nan = float_from_bits(0xFFF0_0000_0000_00FF)
    assert encode_key([payload_nan]) == encode_key([math.nan]) == h("21fff8000000000000")
    assert encode_key([neg_payload_nan]) == encode_key([NEG_NAN]) == h("2100" + "07" + "ff" * 6)


def test_python_types_pick_the_js_type() -> None:
    assert encode_key([1]) == encode_key([KvInt(1)]) == h("1501")  # bigint 1n
    assert encode_key([KvNumber(1)]) == encode_key([1.0]) == h("21bff0000000000000")
    assert encode_key([True]) == h("27")  # not the int 1
    assert encode_key([False]) == h("26")
    assert decode_key(h("1501")) == (1,)
    assert type(decode_key(h("21bff0000000000000"))[0]) is float


# --- Worked encodings --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "encoding"),
    [
        # §1.2.1
        (["hello"], "0268656c6c6f00"),
        ([bytes([1, 2, 0, 7, 8])], "010102" + "00ff" + "070800"),
        ([""], "0200"),
        ([b""], "0100"),
        # §1.3
        ([0], "14"),
        ([1], "1501"),
        ([255], "15ff"),
        ([256], "160100"),
        ([2**64 - 1], "1c" + "ff" * 8),
        ([2**64], "1d09" + "01" + "00" * 8),
        ([-1], "13fe"),
        ([-255], "1300"),
        ([-256], "12feff"),
        ([-(2**64)], "0bf6" + "fe" + "ff" * 8),
        ([1.0], "21bff0000000000000"),
        ([-1.0], "21400fffffffffffff"),
        ([0.0], "218000000000000000"),
        ([-0.0], "217fffffffffffffff"),
        ([math.inf], "21fff0000000000000"),
        ([-math.inf], "21000fffffffffffff"),
        ([math.nan], "21fff8000000000000"),
        ([NEG_NAN], "210007ffffffffffff"),
        (["a", 1], "02610015" + "01"),
        # the empty key, and the largest ints
        ([], ""),
        ([MAX_INT], "1dff" + "ff" * 255),
        ([-MAX_INT], "0b00" + "00" * 255),
    ],
)
def test_worked_encoding(key: list[KeyPart], encoding: str) -> None:
    data = h(encoding)
    assert encode_key(key) == data
    decoded = decode_key(data)
    assert all(same_part(a, b) for a, b in zip(decoded, key, strict=True))


# --- Errors ------------------------------------------------------------------


@pytest.mark.parametrize("value", [256**255, -(256**255), 2**4096])
def test_ints_over_255_bytes_cannot_be_encoded(value: int) -> None:
    with pytest.raises(KeyCodecError, match="more than 255 bytes"):
        encode_key([value])


def test_unsupported_part_type() -> None:
    with pytest.raises(KeyCodecError):
        encode_key([None])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "data",
    [
        "00",  # FoundationDB nil
        "05",  # nested tuple
        "20",  # float32
        "0a",  # just below the int range
        "1e",  # just above it
        "28",
        "ff",
        "0261000a",  # valid part, then a bad tag
    ],
)
def test_invalid_tag(data: str) -> None:
    with pytest.raises(KeyCodecError, match="invalid tag"):
        decode_key(h(data))


@pytest.mark.parametrize("payload", ["ff", "c328", "eda080", "f0908d"])
def test_invalid_utf8(payload: str) -> None:
    with pytest.raises(KeyCodecError, match="invalid utf8"):
        decode_key(h("02" + payload + "00"))
    decode_key(h("01" + payload + "00"))  # the same bytes are fine as Uint8Array


@pytest.mark.parametrize(
    "data",
    [
        "01",  # bytes without terminator
        "026162",  # string without terminator
        "026100ff",  # escaped zero, then end of input
        "15",  # 1-byte int without its byte
        "1c" + "ff" * 7,  # 8-byte int cut short
        "1d",  # big int without length
        "1d0901",  # big int cut short
        "0b",
        "0bf6" + "fe",
        "13",
        "21" + "00" * 7,  # float cut short
    ],
)
def test_truncated_input(data: str) -> None:
    with pytest.raises(KeyCodecError, match="unexpected end"):
        decode_key(h(data))
