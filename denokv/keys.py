"""Key codec: Deno KV keys <-> the ordered byte strings the database stores.

A key is a tuple of parts; each part is written with a one-byte type tag
(FoundationDB tuple layer subset) so that bytewise order of the encoding is the
logical order of the keys. The server never decodes keys; clients and tests do.
"""

from __future__ import annotations

import math
import reprlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

BYTES = 0x01
STRING = 0x02
INT_ZERO = 0x14
INT_NEG_BIG = 0x0B
INT_POS_BIG = 0x1D
FLOAT = 0x21
FALSE = 0x26
TRUE = 0x27

_SIGN_BIT = 0x8000_0000_0000_0000
_ALL_ONES = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class KvInt:
    """A key part that is a JS `bigint`. Plain Python `int` parts mean the same."""

    value: int


@dataclass(frozen=True, slots=True)
class KvNumber:
    """A key part that is a JS `number` (f64), even when it holds an integer.

    `["accounts", 1]` written by Deno is `("accounts", KvNumber(1))` here;
    a plain Python `1` would address the different key `["accounts", 1n]`.
    """

    value: float


KeyPart = bytes | str | int | float | bool | KvInt | KvNumber
Key = Sequence[KeyPart]


class KeyCodecError(ValueError):
    """A key or key part that cannot be encoded or decoded."""


def encode_key(key: Key) -> bytes:
    if isinstance(key, str | bytes | bytearray | memoryview):
        # A sequence too, but of characters or bytes: ("users",) was meant.
        raise KeyCodecError(
            f"a key is a tuple or list of parts, not a single {type(key).__name__}: "
            f"write ({reprlib.repr(key)},)"
        )
    out = bytearray()
    for part in key:
        _encode_part(out, part)
    return bytes(out)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate (from a JS string, or a file name decoded with
        # surrogateescape) has no UTF-8 form. Deno's own client would put U+FFFD
        # in its place; a silent change of a key is worse than a clear refusal.
        bad = text[exc.start]
        raise KeyCodecError(
            f"a key string cannot hold the lone surrogate \\u{ord(bad):04x}"
        ) from None


def _encode_part(out: bytearray, part: KeyPart) -> None:
    # bool before int: bool is a subclass of int in Python.
    if part is True:
        out.append(TRUE)
    elif part is False:
        out.append(FALSE)
    elif isinstance(part, str):
        out.append(STRING)
        out += _utf8(part).replace(b"\x00", b"\x00\xff")
        out.append(0)
    elif isinstance(part, bytes | bytearray | memoryview):
        out.append(BYTES)
        out += bytes(part).replace(b"\x00", b"\x00\xff")
        out.append(0)
    elif isinstance(part, KvInt):
        _encode_int(out, part.value)
    elif isinstance(part, int):
        _encode_int(out, part)
    elif isinstance(part, KvNumber):
        _encode_float(out, float(part.value))
    elif isinstance(part, float):
        _encode_float(out, part)
    else:
        raise KeyCodecError(f"unsupported key part type: {type(part).__name__}")


def _encode_int(out: bytearray, value: int) -> None:
    if value == 0:
        out.append(INT_ZERO)
        return
    magnitude = abs(value)
    n = (magnitude.bit_length() + 7) // 8
    if n > 255:
        raise KeyCodecError("BigUint requires more than 255 bytes to be represented")
    raw = magnitude.to_bytes(n, "big")
    if value > 0:
        if n <= 8:
            out.append(INT_ZERO + n)
        else:
            out += bytes((INT_POS_BIG, n))
        out += raw
    else:
        inverted = bytes(b ^ 0xFF for b in raw)
        if n <= 8:
            out.append(INT_ZERO - n)
        else:
            out += bytes((INT_NEG_BIG, n ^ 0xFF))
        out += inverted


def _encode_float(out: bytearray, value: float) -> None:
    if math.isnan(value):
        bits = 0xFFF8_0000_0000_0000 if math.copysign(1.0, value) < 0 else 0x7FF8_0000_0000_0000
    else:
        bits = struct.unpack(">Q", struct.pack(">d", value))[0]
    bits ^= _ALL_ONES if bits & _SIGN_BIT else _SIGN_BIT
    out.append(FLOAT)
    out += bits.to_bytes(8, "big")


def decode_key(data: bytes) -> tuple[KeyPart, ...]:
    """Decode an encoded key. Ints come back as `int`, floats as `float`."""
    parts: list[KeyPart] = []
    pos = 0
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag in (BYTES, STRING):
            raw, pos = _read_escaped(data, pos)
            if tag == STRING:
                try:
                    parts.append(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise KeyCodecError("invalid utf8") from exc
            else:
                parts.append(raw)
        elif INT_NEG_BIG <= tag <= INT_POS_BIG:
            value, pos = _read_int(data, pos, tag)
            parts.append(value)
        elif tag == FLOAT:
            if pos + 8 > end:
                raise KeyCodecError("unexpected end of key")
            bits = int.from_bytes(data[pos : pos + 8], "big")
            bits ^= _SIGN_BIT if bits & _SIGN_BIT else _ALL_ONES
            parts.append(struct.unpack(">d", bits.to_bytes(8, "big"))[0])
            pos += 8
        elif tag == FALSE:
            parts.append(False)
        elif tag == TRUE:
            parts.append(True)
        else:
            raise KeyCodecError(f"invalid tag 0x{tag:02x}")
    return tuple(parts)


def _read_escaped(data: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    end = len(data)
    while True:
        zero = data.find(b"\x00", pos)
        if zero < 0:
            raise KeyCodecError("unexpected end of key")
        out += data[pos:zero]
        if zero + 1 < end and data[zero + 1] == 0xFF:
            out.append(0)
            pos = zero + 2
            continue
        return bytes(out), zero + 1


def _read_int(data: bytes, pos: int, tag: int) -> tuple[int, int]:
    if tag == INT_ZERO:
        return 0, pos
    if tag in (INT_POS_BIG, INT_NEG_BIG):
        if pos >= len(data):
            raise KeyCodecError("unexpected end of key")
        n = data[pos] if tag == INT_POS_BIG else data[pos] ^ 0xFF
        pos += 1
    else:
        n = abs(tag - INT_ZERO)
    if pos + n > len(data):
        raise KeyCodecError("unexpected end of key")
    raw = data[pos : pos + n]
    if tag > INT_ZERO:
        return int.from_bytes(raw, "big"), pos + n
    return -int.from_bytes(bytes(b ^ 0xFF for b in raw), "big"), pos + n
