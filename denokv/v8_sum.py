"""`M_SUM` with a V8 (or BYTES) operand: the server-side "V8 sum" (KV_FACTS §4.4).

Only top-level numbers and bigints are understood. JS `bigint` maps to Python
`int` and JS `number` to `float`, so the Python type is the V8 sum type.
"""

from __future__ import annotations

import struct

V8, LE64, BYTES = 1, 2, 3  # value encodings

_U64_MAX = (1 << 64) - 1
_READ_VERSIONS = frozenset({13, 14, 15, 16})  # Deno 2.9 writes 16
_WRITE_HEADER = b"\xff\x0f"  # upstream writes format version 15

_PADDING = 0x00
_VERIFY_OBJECT_COUNT = ord("?")
_BIGINT, _DOUBLE, _INT32, _UINT32 = ord("Z"), ord("N"), ord("I"), ord("U")
# Tags that start some other well-formed top-level value (strings, objects,
# boxed numbers, ...). Such a stored value is "unsupported" rather than "invalid".
_OTHER_VALUE_TAGS = frozenset(b"_0TFS\"coaADyxnzsR;'B~r")

_BAD_PARAMS = "Some of the parameters are not valid V8 values"
_BOUND_TYPES = "Min/max parameters have different types than the operand"
_OUT_OF_RANGE = "The result of a Sum operation would exceed its range limit"

V8Number = int | float


class SumError(Exception):
    """Carries the exact user-facing message (HTTP 400 body) as str(exc)."""


class UnsupportedV8Value(ValueError):
    """Well-formed V8 header, but the value is not a number or bigint."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("unexpected end of V8 data")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("unexpected end of V8 data")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def varint32(self) -> int:
        # V8 varints here are all uint32 (LEB128, at most 5 bytes).
        value = 0
        for shift in range(0, 35, 7):
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                if value > 0xFFFF_FFFF:
                    raise ValueError("varint overflows uint32")
                return value
        raise ValueError("varint too long")


def decode_v8_number(data: bytes) -> V8Number:
    """Decode a V8-serialised top-level bigint (-> int) or number (-> float).

    Raises UnsupportedV8Value for another kind of value and ValueError for
    bytes that are not V8 at all.
    """
    r = _Reader(bytes(data))
    if r.byte() != 0xFF:
        raise ValueError("missing V8 header")
    version = r.varint32()
    if version not in _READ_VERSIONS:
        raise ValueError(f"unsupported V8 format version {version}")
    tag = r.byte()
    while tag in (_PADDING, _VERIFY_OBJECT_COUNT):
        if tag == _VERIFY_OBJECT_COUNT:
            r.varint32()  # the object count itself is irrelevant for one value
        tag = r.byte()
    value: V8Number
    if tag == _BIGINT:
        bitfield = r.varint32()
        magnitude = int.from_bytes(r.take(bitfield >> 1), "little")
        value = -magnitude if bitfield & 1 else magnitude
    elif tag == _DOUBLE:
        value = struct.unpack("<d", r.take(8))[0]
    elif tag == _INT32:
        zigzag = r.varint32()
        value = float((zigzag >> 1) ^ -(zigzag & 1))
    elif tag == _UINT32:
        value = float(r.varint32())
    elif tag in _OTHER_VALUE_TAGS:
        raise UnsupportedV8Value(f"V8 value with tag {chr(tag)!r} is not a number")
    else:
        raise ValueError(f"invalid V8 tag 0x{tag:02x}")
    if r.pos != len(r.data):
        raise ValueError("trailing bytes after V8 value")
    return value


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_v8_double(x: float) -> bytes:
    return _WRITE_HEADER + b"N" + struct.pack("<d", x)


def encode_v8_bigint(n: int) -> bytes:
    magnitude = abs(n)
    # Minimal little-endian magnitude; zero still takes one byte.
    length = max(1, (magnitude.bit_length() + 7) // 8)
    bitfield = length * 2 + (1 if n < 0 else 0)
    return _WRITE_HEADER + b"Z" + _varint(bitfield) + magnitude.to_bytes(length, "little")


def _encode(value: V8Number) -> bytes:
    return encode_v8_bigint(value) if isinstance(value, int) else encode_v8_double(value)


def _type_name(value: V8Number) -> str:
    return "BigInt" if isinstance(value, int) else "Number"


def _parse_param(data: bytes) -> V8Number:
    try:
        return decode_v8_number(data)
    except ValueError:
        raise SumError(_BAD_PARAMS) from None


def _parse_stored(data: bytes, encoding: int) -> tuple[str, V8Number]:
    """(type name, value) of the value already in the database."""
    if encoding == LE64:
        if len(data) != 8:
            raise SumError("Invalid sum operand")
        return "KvU64", int.from_bytes(data, "little")
    if encoding == BYTES:
        raise SumError("unsupported value type")
    if encoding != V8:
        raise SumError("Invalid sum operand")
    if not data:
        raise SumError("operand cannot be empty")
    try:
        value = decode_v8_number(data)
    except UnsupportedV8Value:
        raise SumError("unsupported value type") from None
    except ValueError:
        raise SumError("invalid v8 value") from None
    return _type_name(value), value


def v8_sum(
    stored: tuple[bytes, int] | None,
    operand: bytes,
    operand_encoding: int,
    sum_min: bytes,
    sum_max: bytes,
    clamp: bool,
) -> tuple[bytes, int]:
    """New (data, encoding) for an M_SUM whose operand encoding is not LE64 (V8 or BYTES).

    Raises SumError with the message the client must see. LE64 operands take
    the plain wrapping-u64 path in the caller and are rejected here.
    """
    if operand_encoding != V8 or not operand:
        raise SumError(_BAD_PARAMS)
    delta = _parse_param(operand)
    low = _parse_param(sum_min) if sum_min else None
    high = _parse_param(sum_max) if sum_max else None
    kind = _type_name(delta)
    if any(b is not None and _type_name(b) != kind for b in (low, high)):
        raise SumError(_BOUND_TYPES)

    if stored is None:
        # First write stores the operand as the server re-encodes it; bounds
        # are deliberately not applied (upstream behaviour).
        return _encode(delta), V8

    old_kind, old = _parse_stored(*stored)
    if old_kind == "KvU64":
        # Backward compatibility: a plain u64-range bigint may add to a KvU64.
        plain = low is None and high is None and not clamp
        # `old` is the int _parse_stored read from the LE64 bytes.
        if plain and isinstance(delta, int) and isinstance(old, int) and 0 <= delta <= _U64_MAX:
            return ((old + delta) & _U64_MAX).to_bytes(8, "little"), LE64
        raise SumError(f"Cannot sum KvU64 with {kind}")
    if old_kind != kind:
        raise SumError(f"Cannot sum {old_kind} with {kind}")

    total = old + delta
    # Min first, then max; NaN compares false and so never hits a bound.
    if low is not None and total < low:
        if not clamp:
            raise SumError(_OUT_OF_RANGE)
        total = low
    if high is not None and total > high:
        if not clamp:
            raise SumError(_OUT_OF_RANGE)
        total = high
    return _encode(total), V8
