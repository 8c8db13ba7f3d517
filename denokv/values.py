"""Deno KV value codec: Python objects <-> (bytes, encoding) as stored in `kv.v`.

Encodings: 1 = V8 serialization, 2 = LE64 (`Deno.KvU64`), 3 = raw bytes
(a top-level `Uint8Array`). V8 values are written with format version 15,
which Deno 2.x, Node 20 and `@deno/kv` all read; versions 13-16 are read.

Python -> JavaScript (V8 encoding, via `v8serialize` plus the rules below):

- `None` -> null, `v8serialize.jstypes.JSUndefined` -> undefined, `bool` -> boolean
- `int` in the safe range +-(2**53 - 1) -> number; any other `int` -> bigint;
  `JSBigInt` (an `int` subclass) -> bigint at any size. Numbers are the
  default because JS code expects `count + 1` to work; bigints are only
  chosen when a number would lose precision.
- `float` -> number; `str` -> string
- `dict` whose keys are all `str` -> Object; any other mapping (and `JSMap`)
  -> Map; `JSObject` -> Object
- `list` / `tuple` / `JSArray` -> Array; `set` / `frozenset` / `JSSet` -> Set
- `datetime` -> Date (milliseconds, truncated; naive datetimes are taken as UTC)
- `bytes` / `bytearray` / `memoryview` nested in a value -> Uint8Array
- `JSArrayBuffer`, `JSTypedArray`, `JSRegExp`/`re.Pattern`, `JSError`/exceptions
  map to their JS counterparts.

JavaScript -> Python: v8serialize's JS types (`JSObject`, `JSArray` with
`JSHole` for holes, `JSMap`, `JSSet`, `JSRegExp`, `JSError`, `JSArrayBuffer`,
typed arrays), with these choices: a number is an `int` when it is integral
and safe (except -0, which stays `-0.0`), else a `float`; bigint ->
`JSBigInt`; Date -> timezone-aware UTC `datetime`; Uint8Array -> `bytes`
(also Node's host-object form); boxed primitives are unwrapped.

Format 16 (Deno 2.9), as measured against Node 20's format 15 for strings,
numbers, bigints, constants, objects, (sparse) arrays, Date, Map, Set, RegExp,
Error, boxed primitives and cycles: only the header byte differs. Typed arrays
differ because Node writes them as host objects while Deno writes native
ArrayBuffer + view tags, which is not a version matter. The one real v16
change is that ArrayBuffer lengths, resizable maxByteLength and view
offsets/lengths are size_t varints instead of uint32 ones: a resizable buffer
with `maxByteLength: 2 ** 33` is stored by Deno and cannot be read by a
uint32 reader. `_V8Reader` reads those fields as 64-bit for version >= 16.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from v8serialize import Encoder, TagReader, UnhandledValueEncodeV8SerializeError
from v8serialize.constants import (
    FLOAT64_SAFE_INT_RANGE,
    ArrayBufferViewFlags,
    ArrayBufferViewTag,
    SerializationTag,
)
from v8serialize.decode import DecodeContext, DecodeNextFn, DefaultDecodeContext, ReadableTagStream
from v8serialize.encode import EncodeContext, EncodeNextFn, TagWriter, serialize_object_references
from v8serialize.extensions import NodeJsArrayBufferViewHostObjectHandler
from v8serialize.jstypes import JSArray, JSArrayBuffer, JSHole, JSObject, JSUint8Array

from denokv.client.errors import KvValidationError

V8, LE64, BYTES = 1, 2, 3
U64_MAX = (1 << 64) - 1
READ_VERSIONS = range(13, 17)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SAFE_MAX = FLOAT64_SAFE_INT_RANGE.stop - 1  # 2**53 - 1


class KvU64:
    """An unsigned 64-bit integer value (`Deno.KvU64`), stored with encoding 2."""

    __slots__ = ("_value",)
    _value: int

    def __init__(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"KvU64 needs an int, not {type(value).__name__}")
        # Deno's RangeError texts for the same mistakes.
        if value < 0:
            raise KvValidationError(f"Value must be a positive bigint: received {value}")
        if value > U64_MAX:
            raise KvValidationError("Value must fit in a 64-bit unsigned integer")
        object.__setattr__(self, "_value", int(value))

    @property
    def value(self) -> int:
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("KvU64 is immutable")

    def __int__(self) -> int:
        return self._value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KvU64):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((KvU64, self._value))

    def __repr__(self) -> str:
        return f"KvU64({self._value})"


class _V8Reader(ReadableTagStream):
    """A v8serialize stream that also reads format 16 (see module docstring)."""

    __slots__ = ()

    def read_header(self) -> int:
        self.read_tag(SerializationTag.kVersion)
        version = self.read_varint()
        if version not in READ_VERSIONS:
            self.throw(f"Unsupported V8 serialization format version {version} (reads 13-16)")
        self.version = version
        return version

    def read_string_twobyte(self, *, tag: bool = False) -> str:
        # JS strings may hold lone surrogates; keep them as Python surrogates.
        if tag:
            self.read_tag(SerializationTag.kTwoByteString)
        raw = bytes(self.read_bytes(self.read_varint()))  # already bytes: no copy
        return raw.decode("utf-16-le", "surrogatepass")

    def _read_size(self) -> int:
        # v16 writes size_t; older versions uint32.
        if self.version >= 16:
            return self.read_varint(max_bits=64)
        return self.read_uint32()

    def _read_buffer(self, array_buffer: Any, length: int, max_length: int | None) -> Any:
        self.ensure_capacity(length)
        with memoryview(self.data)[self.pos : self.pos + length].toreadonly() as data:
            result = array_buffer(
                data=data, max_byte_length=max_length, resizable=max_length is not None
            )
            self.objects.record_reference(result)
        self.pos += length
        return result

    def _read_js_array_buffer(self, array_buffer: Any, tag: bool = False) -> Any:
        if tag:
            self.read_tag(SerializationTag.kArrayBuffer)
        return self._read_buffer(array_buffer, self._read_size(), None)

    def _read_js_array_buffer_resizable(self, *, array_buffer: Any, tag: bool = False) -> Any:
        if tag:
            self.read_tag(SerializationTag.kResizableArrayBuffer)
        length, max_length = self._read_size(), self._read_size()
        if max_length < length:
            self.throw(f"resizable ArrayBuffer maxByteLength {max_length} < byteLength {length}")
        return self._read_buffer(array_buffer, length, max_length)

    def read_js_array_buffer_view(
        self, backing_buffer: Any, *, array_buffer_view: Any, tag: bool = False
    ) -> Any:
        if self.version < 16:
            return super().read_js_array_buffer_view(
                backing_buffer, array_buffer_view=array_buffer_view, tag=tag
            )
        if tag:
            self.read_tag(SerializationTag.kArrayBufferView)
        view_tag = self.read_varint()
        if view_tag not in ArrayBufferViewTag:
            self.throw(f"ArrayBufferView view type {view_tag:#x} is not a known type")
        offset, length = self._read_size(), self._read_size()
        flags = ArrayBufferViewFlags(self.read_varint())
        result = array_buffer_view(
            buffer=backing_buffer,
            format=ArrayBufferViewTag(view_tag),
            byte_offset=offset,
            byte_length=None if ArrayBufferViewFlags.IsLengthTracking in flags else length,
        )
        self.objects.record_reference(result)
        return result


# Public name for modules that decode with steps of their own (the console).
V8Reader = _V8Reader


def _encode_step(value: object, /, ctx: EncodeContext, next: EncodeNextFn) -> None:
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        ctx.stream.write_js_object(value.items(), ctx=ctx, identity=value)
    elif isinstance(value, bytes | bytearray | memoryview):
        ctx.encode_object(JSUint8Array(JSArrayBuffer(bytes(value))))
    elif isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        ctx.stream.objects.record_reference(value)
        ctx.stream.write_tag(SerializationTag.kDate)
        ctx.stream.write_double(float((aware - _EPOCH) // _MS), tag=None)
    elif isinstance(value, str) and not value.isascii():
        try:
            next(value)
        except UnicodeEncodeError:  # lone surrogates: only a two-byte string holds them
            encoded = value.encode("utf-16-le", "surrogatepass")
            ctx.stream.write_tag(SerializationTag.kTwoByteString)
            ctx.stream.write_varint(len(encoded))
            ctx.stream.data.extend(encoded)
    elif isinstance(value, KvU64):
        raise TypeError("KvU64 can only be a top-level value, not nested inside another")
    else:
        next(value)


def number_value(x: float) -> int | float:
    """The Python form of a JS number: an int when it is a whole number from 0 to 2**53 - 1
    (so `1` reads back as 1, not 1.0), else the float itself (-0.0, fractions, NaN, ...)."""
    if x.is_integer() and abs(x) <= _SAFE_MAX and math.copysign(1.0, x) > 0:
        return int(x)
    return x


def _decode_step(tag: SerializationTag, /, ctx: DecodeContext, next: DecodeNextFn) -> object:
    if tag is SerializationTag.kDouble:
        return number_value(ctx.stream.read_double())
    if tag is SerializationTag.kDate:
        ms = ctx.stream.read_double()
        try:
            result = _EPOCH + timedelta(milliseconds=ms)
        except (ValueError, OverflowError) as e:
            what = "Invalid Date" if math.isnan(ms) else f"Date {ms} ms from the epoch"
            raise ValueError(f"cannot represent JS {what} as a Python datetime") from e
        ctx.stream.objects.record_reference(result)
        return result
    value = next(tag)
    if isinstance(value, JSUint8Array):
        with value.get_buffer() as view:
            return bytes(view)
    return value


_ENCODER = Encoder(encode_steps=(serialize_object_references, _encode_step, TagWriter()))
_DECODE_STEPS = (
    _decode_step,
    TagReader(host_object_deserializer=NodeJsArrayBufferViewHostObjectHandler()),
)


def encode_value(value: object) -> tuple[bytes, int]:
    """Encode a Python value as Deno KV stores it: `(data, encoding)`."""
    if isinstance(value, KvU64):
        return value.value.to_bytes(8, "little"), LE64
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), BYTES
    if isinstance(value, JSUint8Array):  # Deno stores a top-level Uint8Array raw
        with value.get_buffer() as view:
            return bytes(view), BYTES
    return encode_v8(value), V8


def decode_value(data: bytes | bytearray | memoryview, encoding: int) -> object:
    """Decode a stored value; raises ValueError for malformed data or encodings."""
    if encoding == V8:
        ctx = DefaultDecodeContext(stream=_V8Reader(bytes(data)), decode_steps=_DECODE_STEPS)
        ctx.stream.read_header()
        value = ctx.decode_object()
        try:
            return _plain(value, {})
        except _Cyclic:
            return value  # a graph with cycles keeps v8serialize's own types
    if encoding == LE64:
        if len(data) != 8:
            raise ValueError(f"a KvU64 (LE64) value must be 8 bytes, got {len(data)}")
        return KvU64(int.from_bytes(data, "little"))
    if encoding == BYTES:
        return bytes(data)
    raise ValueError(f"unknown value encoding {encoding!r} (expected 1=V8, 2=LE64, 3=bytes)")


class _Cyclic(Exception):
    pass


def _plain(value: object, memo: dict[int, object], path: set[int] | None = None) -> object:
    """Plain Python containers for plain JS ones: Object -> dict, dense Array -> list.

    Arrays with holes or extra properties keep their v8serialize type, and so
    do Maps (they compare equal to dicts). An object referenced twice becomes
    one dict referenced twice; a graph with a cycle is left as decoded.
    """
    path = path if path is not None else set()
    if isinstance(value, JSArray):
        elements = list(value.array)
        if dict(value.properties) or any(e is JSHole for e in elements):
            return value
        return _convert(value, memo, path, lambda: [_plain(e, memo, path) for e in elements])
    if isinstance(value, JSObject):
        return _convert(
            value, memo, path, lambda: {str(k): _plain(v, memo, path) for k, v in value.items()}
        )
    return value


def _convert(value: object, memo: dict[int, object], path: set[int], build: Any) -> object:
    key = id(value)
    if key in memo:
        return memo[key]
    if key in path:
        raise _Cyclic()
    path.add(key)
    try:
        memo[key] = build()
    finally:
        path.discard(key)
    return memo[key]


def encode_v8(value: object) -> bytes:
    """V8-serialize any value, bytes included (queue payloads are always V8)."""
    try:
        return bytes(_ENCODER.encode(value))
    except UnhandledValueEncodeV8SerializeError as exc:
        raise KvValidationError(
            f"Deno KV cannot store a value of type {type(exc.value).__name__}"
            + ("" if exc.value is value else f" (inside the {type(value).__name__} given)")
        ) from None
