"""Export and import lines: entries as JSON that keeps every JavaScript type.

One JSON object per line:

    {"key": [{"string": "users"}, {"bigint": "1"}],
     "value": {"map": [[{"string": "a"}, {"date": "2024-01-02T03:04:05.678Z"}]]},
     "versionstamp": "00000000000000010000", "expireAt": 1767225600000}

A value is an object with one member naming its type: `string`, `number` (a JSON
number, or "NaN", "Infinity", "-Infinity", "-0"), `bigint` (decimal text),
`boolean`, `null`, `undefined`, `date` (ISO text), `bytes` (base64; a
Uint8Array), `array`, `object` (a list of [name, value] pairs, so the order is
kept), `map` (a list of [key, value] pairs), `set`, `u64` (decimal text; a
`Deno.KvU64`). Anything else (RegExp, Error, typed arrays other than
Uint8Array, sparse arrays, boxed primitives, objects referenced twice or in a
cycle, dates JS allows but Python does not) is kept exactly as `{"v8": base64}`,
the stored V8 bytes. Key parts use the same forms (`string`, `number`, `bigint`,
`boolean`, `bytes`). `versionstamp` is informational; `expireAt` is optional.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from v8serialize.jstypes import (
    JSArray,
    JSBigInt,
    JSHole,
    JSMap,
    JSObject,
    JSSet,
    JSUint8Array,
    JSUndefined,
)

from denokv.console.jsvalue import JSDate, decode_exact, js_date
from denokv.console.literal import LiteralError, date_from_text
from denokv.keys import KeyPart, decode_key, encode_key
from denokv.operations import Entry
from denokv.values import V8, KvU64, encode_value, number_value

_SPECIAL_NUMBERS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, "-0": -0.0}


class NotPlain(Exception):
    """A value the typed form cannot hold exactly; the export keeps its V8 bytes."""


class ImportLineError(ValueError):
    """An import line that cannot be written; nothing of the import is written."""


@dataclass(frozen=True, slots=True)
class ImportedEntry:
    key: bytes
    value: bytes
    encoding: int
    expire_at_ms: int | None


# -- export -----------------------------------------------------------------------------


def export_line(entry: Entry, expire_at_ms: int | None) -> str:
    line: dict[str, Any] = {
        "key": [tag_key_part(p) for p in decode_key(entry.key)],
        "value": tag_stored(entry.value, entry.encoding),
        "versionstamp": entry.versionstamp.hex(),
    }
    if expire_at_ms is not None:
        line["expireAt"] = expire_at_ms
    return json.dumps(line, separators=(",", ":"))


def tag_key_part(part: KeyPart) -> dict[str, Any]:
    if isinstance(part, bool):
        return {"boolean": part}
    if isinstance(part, float):
        return {"number": _tag_number(part)}
    if isinstance(part, int):
        return {"bigint": str(part)}
    if isinstance(part, str):
        return {"string": part}
    if isinstance(part, bytes):
        return {"bytes": _b64(part)}
    raise TypeError(f"not a key part: {type(part).__name__}")


def tag_stored(data: bytes, encoding: int) -> dict[str, Any]:
    """The typed form of a stored value, or its raw V8 bytes when that form would lose something."""
    try:
        value = decode_exact(data, encoding)
    except ValueError:
        value = None
        if encoding != V8:
            raise
    else:
        if isinstance(value, KvU64):
            return {"u64": str(value.value)}
        if isinstance(value, bytes):
            return {"bytes": _b64(value)}
        try:
            return _Tagger().tag(value)
        except NotPlain:
            pass
    return {"v8": _b64(data)}


class _Tagger:
    def __init__(self) -> None:
        self.seen: set[int] = set()

    def tag(self, value: object) -> dict[str, Any]:
        scalar = _tag_scalar(value)
        if scalar is not None:
            return scalar
        # A container met twice (shared or cyclic) would come back as two copies.
        if id(value) in self.seen:
            raise NotPlain()
        self.seen.add(id(value))
        if isinstance(value, JSMap):
            return {"map": [[self.tag(k), self.tag(v)] for k, v in value.items()]}
        if isinstance(value, JSSet):
            return {"set": [self.tag(v) for v in value]}
        if isinstance(value, JSArray):
            elements = list(value.array)
            if dict(value.properties) or any(e is JSHole for e in elements):
                raise NotPlain()
            return {"array": [self.tag(e) for e in elements]}
        if isinstance(value, list):
            return {"array": [self.tag(e) for e in value]}
        if isinstance(value, JSObject | dict):
            return {"object": [[str(k), self.tag(v)] for k, v in value.items()]}
        if isinstance(value, JSUint8Array):
            with value.get_buffer() as view:
                return {"bytes": _b64(bytes(view))}
        if isinstance(value, JSDate):
            if value.as_datetime() is None or not value.ms.is_integer():
                raise NotPlain()
            return {"date": js_date(value)}
        raise NotPlain()


def _tag_scalar(value: object) -> dict[str, Any] | None:
    if isinstance(value, bool):
        return {"boolean": value}
    if isinstance(value, JSBigInt):
        return {"bigint": str(int(value))}
    if isinstance(value, int | float):
        return {"number": _tag_number(float(value)) if isinstance(value, float) else value}
    if isinstance(value, str):
        return {"string": value}
    if value is None:
        return {"null": None}
    if value is JSUndefined:
        return {"undefined": None}
    if isinstance(value, bytes):
        return {"bytes": _b64(value)}
    return None


def _tag_number(x: float) -> float | int | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0 and math.copysign(1.0, x) < 0:
        return "-0"
    return number_value(x)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- import -----------------------------------------------------------------------------


def parse_import(text: str) -> list[ImportedEntry]:
    """Every entry of an export file; raises ImportLineError naming the first bad line."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(_import_line(json.loads(line)))
        except (ValueError, TypeError, KeyError, LiteralError) as exc:
            raise ImportLineError(f"line {number}: {exc}") from None
    return entries


def _import_line(line: Any) -> ImportedEntry:
    if not isinstance(line, dict) or "key" not in line or "value" not in line:
        raise ValueError('expected an object with "key" and "value"')
    parts = line["key"]
    if not isinstance(parts, list):
        raise ValueError('"key" must be a list of key parts')
    key = encode_key([untag_key_part(p) for p in parts])
    tagged = line["value"]
    if isinstance(tagged, dict) and set(tagged) == {"v8"}:
        data, encoding = base64.b64decode(tagged["v8"], validate=True), V8
        decode_exact(data, V8)  # refuse bytes Deno could not read back
    else:
        data, encoding = encode_value(untag(tagged, top=True))
    expire = line.get("expireAt")
    if expire is not None and (type(expire) is not int or expire < 0):
        raise ValueError('"expireAt" must be a time in ms since the epoch')
    return ImportedEntry(key, data, encoding, expire)


def untag_key_part(tagged: Any) -> KeyPart:
    kind, body = _one_member(tagged)
    if kind == "string" and isinstance(body, str):
        return body
    if kind == "number":
        return float(_untag_number(body))
    if kind == "bigint" and isinstance(body, str):
        return int(body)
    if kind == "boolean" and isinstance(body, bool):
        return body
    if kind == "bytes" and isinstance(body, str):
        return base64.b64decode(body, validate=True)
    raise ValueError(f"{kind!r} is not a key part type")


def untag(tagged: Any, top: bool = False) -> object:
    """The Python value `encode_value` stores as the JS value the typed form names."""
    kind, body = _one_member(tagged)
    simple = _untag_simple(kind, body)
    if simple is not _NONE:
        return simple
    if kind in ("array", "set") and isinstance(body, list):
        items = [untag(v) for v in body]
        return items if kind == "array" else JSSet(items)
    if kind in ("object", "map") and isinstance(body, list):
        pairs = [_pair(p) for p in body]
        if kind == "map":
            return JSMap([(untag(k), untag(v)) for k, v in pairs])
        if not all(isinstance(k, str) for k, _ in pairs):
            raise ValueError("object property names must be strings")
        return {k: untag(v) for k, v in pairs}
    if kind == "u64" and isinstance(body, str):
        if not top:
            raise ValueError("a u64 (Deno.KvU64) can only be a whole value")
        return KvU64(int(body))
    if kind == "v8":
        raise ValueError("raw v8 bytes can only be a whole value")
    raise ValueError(f"unknown or malformed value type {kind!r}")


_NONE = object()


def _untag_simple(kind: str, body: Any) -> object:
    if kind == "string" and isinstance(body, str):
        return body
    if kind == "number":
        return number_value(float(_untag_number(body)))
    if kind == "bigint" and isinstance(body, str):
        return JSBigInt(int(body))
    if kind == "boolean" and isinstance(body, bool):
        return body
    if kind == "null":
        return None
    if kind == "undefined":
        return JSUndefined
    if kind == "date" and isinstance(body, str):
        return date_from_text(body)
    if kind == "bytes" and isinstance(body, str):
        return base64.b64decode(body, validate=True)
    return _NONE


def _untag_number(body: Any) -> float:
    if isinstance(body, str) and body in _SPECIAL_NUMBERS:
        return _SPECIAL_NUMBERS[body]
    if isinstance(body, bool) or not isinstance(body, int | float):
        raise ValueError(f"not a number: {body!r}")
    return float(body)


def _one_member(tagged: Any) -> tuple[str, Any]:
    if not isinstance(tagged, dict) or len(tagged) != 1:
        raise ValueError(f"expected an object with one member naming the type, got {tagged!r}")
    ((kind, body),) = tagged.items()
    return kind, body


def _pair(pair: Any) -> tuple[Any, Any]:
    if not isinstance(pair, list) or len(pair) != 2:
        raise ValueError("expected a [key, value] pair")
    return pair[0], pair[1]
