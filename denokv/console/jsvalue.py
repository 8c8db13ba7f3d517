"""Stored values as the console shows them: decoded exactly, printed the way Deno prints them.

The library decoder (`denokv.values.decode_value`) folds a few things away that a
program does not care about but a person inspecting data does: boxed primitives
become plain ones, a Date outside Python's range is an error, a shared object
looks like two. The console decodes with its own steps so that the page never
shows a value as something it is not, and so the export can tell when its typed
JSON would lose something (then it keeps the raw V8 bytes instead).

`show(value)` prints in Deno's `console.log` style (`Map(1) { "a" => 1 }`,
`Uint8Array(2) [ 1, 2 ]`, `1n`, `[Deno.KvU64: 5n]`); `denokv.console.literal`
reads the same text back, so what the page shows is what the editor accepts.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from v8serialize import TagReader
from v8serialize.constants import SerializationTag
from v8serialize.decode import DecodeContext, DecodeNextFn, DefaultDecodeContext
from v8serialize.extensions import NodeJsArrayBufferViewHostObjectHandler
from v8serialize.jstypes import (
    JSArray,
    JSArrayBuffer,
    JSBigInt,
    JSDataView,
    JSError,
    JSHole,
    JSMap,
    JSObject,
    JSPrimitiveObject,
    JSRegExp,
    JSSet,
    JSTypedArray,
    JSUint8Array,
    JSUndefined,
)

from denokv.values import BYTES, LE64, V8, KvU64, V8Reader, number_value

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
WIDTH = 72  # a container printed wider than this is broken over several lines


@dataclass(frozen=True, eq=False)
class JSDate:
    """A JS Date as its time value in ms (NaN for an Invalid Date); any range JS allows."""

    ms: float

    def as_datetime(self) -> datetime | None:
        try:
            return _EPOCH + timedelta(milliseconds=self.ms)
        except (ValueError, OverflowError):
            return None


def _decode_step(tag: SerializationTag, /, ctx: DecodeContext, next: DecodeNextFn) -> object:
    if tag is SerializationTag.kDouble:
        return number_value(ctx.stream.read_double())
    if tag is SerializationTag.kDate:
        date = JSDate(ctx.stream.read_double())
        ctx.stream.objects.record_reference(date)
        return date
    return next(tag)


_STEPS = (
    _decode_step,
    TagReader(
        js_primitive_objects=True,
        host_object_deserializer=NodeJsArrayBufferViewHostObjectHandler(),
    ),
)


def decode_exact(data: bytes, encoding: int) -> object:
    """Decode a stored value keeping v8serialize's own types; raises ValueError if malformed."""
    if encoding == LE64:
        if len(data) != 8:
            raise ValueError(f"a KvU64 value must be 8 bytes, got {len(data)}")
        return KvU64(int.from_bytes(data, "little"))
    if encoding == BYTES:
        return bytes(data)
    if encoding != V8:
        raise ValueError(f"unknown value encoding {encoding}")
    ctx = DefaultDecodeContext(stream=V8Reader(bytes(data)), decode_steps=_STEPS)
    ctx.stream.read_header()
    return ctx.decode_object()


def type_name(value: object) -> str:
    """The value's type as the page names it: `string`, `bigint`, `Map`, `Int16Array`, ..."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, KvU64):
        return "KvU64"
    if isinstance(value, JSBigInt):
        return "bigint"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if value is JSUndefined:
        return "undefined"
    if isinstance(value, JSDate):
        return "Date"
    if isinstance(value, bytes | JSUint8Array):
        return "Uint8Array"
    return _CONTAINER_NAMES.get(
        type(value), type(value).__name__.removeprefix("Backport").removeprefix("JS")
    )


_CONTAINER_NAMES: dict[type, str] = {
    dict: "object", JSObject: "object", list: "array", JSArray: "array", JSMap: "Map", JSSet: "Set",
    JSPrimitiveObject: "boxed", JSRegExp: "RegExp", JSError: "Error",
}  # fmt: skip


# -- printing -------------------------------------------------------------------------


def js_number(x: float) -> str:
    """A number as JavaScript's `String(x)` writes it."""
    if isinstance(x, int):
        x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign = "-" if x < 0 else ""
    digits, exponent = _shortest_digits(abs(x))
    k, n = len(digits), exponent  # value = 0.digits * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def _shortest_digits(x: float) -> tuple[str, int]:
    _sign, digit_tuple, exp = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    stripped = len("".join(map(str, digit_tuple))) - len(digits)
    assert isinstance(exp, int)
    # value = int(digits) * 10**(exp + stripped) = 0.digits * 10**n
    n = exp + stripped + len(digits)
    lead = len(digits) - len(digits.lstrip("0"))
    return digits.lstrip("0"), n - lead


_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def js_string(s: str) -> str:
    """A double-quoted JS string literal; invisible and control characters escaped."""
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"):
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\u{{{code:x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def js_date(date: JSDate) -> str:
    moment = date.as_datetime()
    if moment is None:
        return "Invalid Date" if math.isnan(date.ms) else f"new Date({js_number(date.ms)})"
    m = moment
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:"
            f"{m.second:02d}.{m.microsecond // 1000:03d}Z")  # fmt: skip


def _is_identifier(name: str) -> bool:
    return _IDENTIFIER.fullmatch(name) is not None


def property_name(name: object) -> str:
    if isinstance(name, str):
        return name if _is_identifier(name) else js_string(name)
    return js_string(str(name if not isinstance(name, float) else js_number(name)))


def show(value: object, width: int | None = WIDTH) -> str:
    """Deno-style text of a decoded value, broken over lines past `width` (None: one line)."""
    return _Printer(width).show(value, 0)


def show_key(parts: tuple[object, ...]) -> str:
    return "[" + ", ".join(show_key_part(p) for p in parts) + "]"


def show_key_part(part: object) -> str:
    """A key part as Deno writes it: `"users"`, `1`, `1n`, `true`, `Uint8Array(1) [ 7 ]`."""
    if isinstance(part, bool):
        return "true" if part else "false"
    if isinstance(part, float):
        return js_number(part)
    if isinstance(part, int):
        return f"{part}n"
    if isinstance(part, str):
        return js_string(part)
    if isinstance(part, bytes):
        return _bytes_text(part)
    raise TypeError(f"not a key part: {type(part).__name__}")


def _bytes_text(data: bytes, name: str = "Uint8Array") -> str:
    if not data:
        return f"{name}(0) []"
    return f"{name}({len(data)}) [ " + ", ".join(str(b) for b in data) + " ]"


class _Printer:
    def __init__(self, width: int | None) -> None:
        self.path: set[int] = set()
        self.width = width

    def show(self, value: object, indent: int) -> str:
        scalar = _scalar_text(value)
        if scalar is not None:
            return scalar
        key = id(value)
        if key in self.path:
            return "[Circular]"
        self.path.add(key)
        try:
            return self._container(value, indent)
        finally:
            self.path.discard(key)

    def _container(self, value: Any, indent: int) -> str:
        if isinstance(value, JSMap):
            items = [f"{self.show(k, indent + 2)} => {self.show(v, indent + 2)}"
                     for k, v in value.items()]  # fmt: skip
            return self._wrap(f"Map({len(items)}) {{", items, "}", indent, empty="{}")
        if isinstance(value, JSSet):
            items = [self.show(v, indent + 2) for v in value]
            return self._wrap(f"Set({len(items)}) {{", items, "}", indent, empty="{}")
        if isinstance(value, list | tuple | JSArray):
            return self._wrap("[", self._array_items(value, indent), "]", indent)
        if isinstance(value, JSError):
            return self._error(value, indent)
        if isinstance(value, JSDataView):
            buffer = self.show(value.backing_buffer, indent + 2)
            return (f"DataView {{ byteLength: {value.byte_length}, byteOffset: "
                    f"{value.byte_offset}, buffer: {buffer} }}")  # fmt: skip
        if isinstance(value, dict | JSObject):
            items = [f"{property_name(k)}: {self.show(v, indent + 2)}" for k, v in value.items()]
            return self._wrap("{", items, "}", indent)
        return f"[{type(value).__name__}]"

    def _array_items(self, value: Any, indent: int) -> list[str]:
        elements = list(value.array) if isinstance(value, JSArray) else list(value)
        items: list[str] = []
        holes = 0
        for element in elements:
            if element is JSHole:
                holes += 1
                continue
            if holes:
                items.append(f"<{holes} empty item{'s' if holes > 1 else ''}>")
                holes = 0
            items.append(self.show(element, indent + 2))
        if holes:
            items.append(f"<{holes} empty item{'s' if holes > 1 else ''}>")
        if isinstance(value, JSArray):
            for k, v in value.properties.items():
                items.append(f"{property_name(k)}: {self.show(v, indent + 2)}")
        return items

    def _error(self, error: JSError, indent: int) -> str:
        head = f"{error.name}: {error.message}" if error.message else str(error.name)
        cause = getattr(error, "cause", None)
        if cause is None:
            return head
        return f"{head} {{ [cause]: {self.show(cause, indent + 2)} }}"

    def _wrap(
        self, opening: str, items: list[str], closing: str, indent: int, empty: str = ""
    ) -> str:
        if not items:
            return opening[:-1] + (empty or opening[-1] + closing)
        flat = f"{opening} {', '.join(items)} {closing}"
        if self.width is None or (len(flat) + indent <= self.width and "\n" not in flat):
            return flat
        pad = " " * (indent + 2)
        body = ",\n".join(pad + item for item in items)
        return f"{opening}\n{body},\n{' ' * indent}{closing}"


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, KvU64):
        return f"[Deno.KvU64: {value.value}n]"
    if isinstance(value, JSBigInt):
        return f"{int(value)}n"
    if isinstance(value, int | float):
        return js_number(value)
    if isinstance(value, str):
        return js_string(value)
    if value is None:
        return "null"
    if value is JSUndefined:
        return "undefined"
    if isinstance(value, JSDate):
        return js_date(value)
    if isinstance(value, bytes):
        return _bytes_text(value)
    if isinstance(value, JSUint8Array):
        with value.get_buffer() as view:
            return _bytes_text(bytes(view))
    if isinstance(value, JSTypedArray):
        name = type(value).__name__.removeprefix("Backport").removeprefix("JS")
        wide = name.startswith("Big")
        with value.get_buffer() as view:
            items = [_scalar_text(JSBigInt(x) if wide else x) or "?" for x in view.tolist()]
        return f"{name}({len(items)}) [ {', '.join(items)} ]" if items else f"{name}(0) []"
    if isinstance(value, JSArrayBuffer):
        return _buffer_text(value)
    if isinstance(value, JSPrimitiveObject):
        inner = value.value
        label = {bool: "Boolean", str: "String"}.get(type(inner))
        if label is None:
            label = "BigInt" if isinstance(inner, JSBigInt) else "Number"
        return f"[{label}: {_scalar_text(inner)}]"
    if isinstance(value, JSRegExp):
        return f"/{value.source}/{value.flags.canonical}"
    return None


def _buffer_text(buffer: JSArrayBuffer) -> str:
    view = buffer.data
    data = bytes(view[:100])
    length = len(view)
    contents = " ".join(f"{b:02x}" for b in data) + (" ..." if length > 100 else "")
    extra = f", maxByteLength: {buffer.max_byte_length}" if buffer.resizable else ""
    return f"ArrayBuffer {{ [Uint8Contents]: <{contents}>, byteLength: {length}{extra} }}"
