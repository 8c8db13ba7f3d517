"""Reading keys and values typed in the console, in the syntax the console prints.

A small recursive-descent reader for JavaScript literals, never `eval`: strings,
numbers (`1`, `-0`, `NaN`, `1e21`), bigints (`1n`), `true`/`false`/`null`/
`undefined`, arrays, objects, and the forms Deno prints or a program writes for
`Date`, `Uint8Array`, `Map`, `Set` and `Deno.KvU64`:

    Map(1) { "a" => 1 }        new Map([["a", 1]])
    Set(1) { 1n }              new Set([1n])
    Uint8Array(2) [ 1, 2 ]     new Uint8Array([1, 2])
    2024-01-02T03:04:05.678Z   new Date("2024-01-02T03:04:05.678Z")   new Date(0)
    [Deno.KvU64: 5n]           new Deno.KvU64(5n)

The result is what `denokv.values.encode_value` stores as that JS value: a number
is an `int` only when it is integral and safe (else a `float`), a bigint is a
`JSBigInt`, so `1`, `1n` and `"1"` stay three different values.
"""

from __future__ import annotations

import builtins
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from v8serialize.jstypes import JSBigInt, JSMap, JSSet, JSUndefined

from denokv.keys import KeyPart
from denokv.values import KvU64, number_value

_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F_]+n?|0[oO][0-7_]+n?|0[bB][01_]+n?"
    r"|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?n?"
)
_ISO_DATE = re.compile(r"[+-]?\d{4,6}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?Z")
_WORD = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RADIX = ("0x", "0o", "0b")


def _float_of(token: str) -> float:
    """A JS number literal's value (without its sign), in any of its radixes."""
    if token[:2].lower() in _RADIX:
        return float(int(token, 0))
    return float(token)


class LiteralError(ValueError):
    """Text that is not a value the console can write; says where and why."""


def parse_value(text: str) -> object:
    """A JS value from its literal text (see the module docstring)."""
    reader = _Reader(text)
    value = reader.value(top=True)
    reader.end()
    return value


def parse_key(text: str) -> tuple[KeyPart, ...]:
    """A key from `["users", 1, 1n, true, Uint8Array(1) [ 7 ]]`; the brackets may be left out."""
    stripped = text.strip()
    if not stripped.startswith("["):
        stripped = f"[{stripped}]"
    reader = _Reader(stripped)
    items = reader.array_items()
    reader.end()
    return tuple(_key_part(item, i) for i, item in enumerate(items))


def _key_part(item: object, index: int) -> KeyPart:
    if isinstance(item, bool | str | bytes):
        return item
    if isinstance(item, JSBigInt):
        return int(item)
    if isinstance(item, int | float):
        return float(item)  # a JS number: keys.py writes floats as numbers
    raise LiteralError(
        f"key part {index + 1} is not a string, number, bigint, boolean or Uint8Array"
    )


def parse_number(text: str) -> float | int:
    """A JS number typed on its own (the editor's number type)."""
    value = parse_value(text)
    if isinstance(value, bool) or not isinstance(value, int | float) or isinstance(value, JSBigInt):
        raise LiteralError(f"{text.strip()!r} is not a number")
    return value


def date_from_ms(ms: float) -> datetime:
    if not math.isfinite(ms):
        raise LiteralError("an Invalid Date cannot be written from the console")
    try:
        return _EPOCH + timedelta(milliseconds=math.trunc(ms))
    except OverflowError:
        raise LiteralError(f"the date {ms} ms from the epoch is out of range") from None


def date_from_text(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LiteralError(f"invalid date {text!r}: expected 2024-01-02T03:04:05.678Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- plumbing ---------------------------------------------------------------------

    def fail(self, what: str) -> LiteralError:
        return LiteralError(f"{what} at character {self.pos + 1}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            found = self.text[self.pos : self.pos + 12] or "the end"
            raise self.fail(f"expected {token!r} but found {found!r}")

    def end(self) -> None:
        self.skip()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the value")

    def word(self) -> str | None:
        self.skip()
        match = _WORD.match(self.text, self.pos)
        return match.group(0) if match else None

    # -- values -----------------------------------------------------------------------

    def value(self, top: bool = False) -> object:
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("expected a value")
        ch = self.text[self.pos]
        if ch in "\"'":
            return self.string()
        if ch == "[":
            if re.match(r"\[\s*Deno\.KvU64\s*:", self.text[self.pos :]):
                return self.kv_u64(top, display=True)
            return self.array_items()
        if ch == "{":
            return self.object()
        if ch == "-" or ch == "+" or ch.isdigit() or ch == ".":
            date = _ISO_DATE.match(self.text, self.pos)
            if date:
                self.pos = date.end()
                return date_from_text(date.group(0))
            return self.number()
        word = self.word()
        if word is None:
            raise self.fail(f"unexpected {ch!r}")
        return self.named(word, top)

    def named(self, word: str, top: bool) -> object:
        self.pos += len(word)
        constants: dict[str, Any] = {
            "true": True, "false": False, "null": None, "undefined": JSUndefined,
            "NaN": math.nan, "Infinity": math.inf,
        }  # fmt: skip
        if word in constants:
            return constants[word]
        if word == "new":
            return self.construct(top)
        if word in ("Map", "Set", "Uint8Array") and self.peek("("):
            return self.display_form(word)
        raise self.fail(f"unknown name {word!r}")

    def number(self) -> object:
        sign = -1 if self.take("-") else 1
        if sign == 1:
            self.take("+")
        if self.take("Infinity"):
            return sign * math.inf
        self.skip()
        match = _NUMBER.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a number")
        self.pos = match.end()
        token = match.group(0).replace("_", "")
        if token.endswith("n"):
            if "." in token or ("e" in token.lower() and token[:2].lower() not in _RADIX):
                raise self.fail("a bigint must be an integer")
            return JSBigInt(sign * int(token[:-1], 0 if token[:2].lower() in _RADIX else 10))
        return number_value(sign * _float_of(token))

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            ch = self.text[self.pos]
            self.pos += 1
            if ch == quote:
                return "".join(out)
            if ch == "\\":
                out.append(self.escape())
            elif ch in "\r\n":
                raise self.fail("line break inside a string (write \\n)")
            else:
                out.append(ch)

    def escape(self) -> str:
        if self.pos >= len(self.text):
            raise self.fail("unterminated string")
        ch = self.text[self.pos]
        self.pos += 1
        simple = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
        if ch in simple and not (ch == "0" and self.text[self.pos : self.pos + 1].isdigit()):
            return simple[ch]
        if ch == "x":
            return chr(self.hex_digits(2))
        if ch == "u":
            if self.text.startswith("{", self.pos):
                close = self.text.find("}", self.pos)
                if close < 0:
                    raise self.fail("unterminated \\u{...} escape")
                digits = self.text[self.pos + 1 : close]
                self.pos = close + 1
                try:
                    code = int(digits, 16)
                    return chr(code)
                except (ValueError, OverflowError):
                    raise self.fail(f"invalid escape \\u{{{digits}}}") from None
            return self.surrogate_pair(self.hex_digits(4))
        if ch in "\r\n":
            return ""  # a line continuation
        if ch.isdigit():
            raise self.fail("octal escapes are not allowed")
        return ch

    def surrogate_pair(self, high: int) -> str:
        if 0xD800 <= high <= 0xDBFF and re.match(r"\\u[dD][c-fC-F]", self.text[self.pos :]):
            self.pos += 2
            low = self.hex_digits(4)
            return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
        return chr(high)

    def hex_digits(self, n: int) -> int:
        digits = self.text[self.pos : self.pos + n]
        if len(digits) != n or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise self.fail(f"expected {n} hex digits")
        self.pos += n
        return int(digits, 16)

    def array_items(self) -> list[object]:
        self.expect("[")
        items: list[object] = []
        while not self.take("]"):
            items.append(self.value())
            if not self.take(","):
                self.expect("]")
                break
        return items

    def object(self) -> dict[str, object]:
        self.expect("{")
        result: dict[str, object] = {}
        while not self.take("}"):
            name = self.property_name()
            self.expect(":")
            result[name] = self.value()
            if not self.take(","):
                self.expect("}")
                break
        return result

    def property_name(self) -> str:
        self.skip()
        if self.pos < len(self.text) and self.text[self.pos] in "\"'":
            return self.string()
        word = self.word()
        if word is not None:
            self.pos += len(word)
            return word
        match = _NUMBER.match(self.text, self.pos)
        if match and not match.group(0).endswith("n"):
            self.pos = match.end()
            from denokv.console.jsvalue import js_number

            return js_number(_float_of(match.group(0).replace("_", "")))  # {0x10: 1}: "16"
        raise self.fail("expected a property name")

    def construct(self, top: bool) -> builtins.object:
        name = self.word()
        if name is None:
            raise self.fail("expected a constructor after 'new'")
        self.pos += len(name)
        if name == "Deno":
            self.expect(".")
            self.expect("KvU64")
            return self.kv_u64(top, display=False)
        self.expect("(")
        if self.take(")"):
            args: list[object] = []
        else:
            args = [self.value()]
            self.take(",")
            self.expect(")")
        return _construct(name, args, self)

    def display_form(self, name: str) -> builtins.object:
        self.expect("(")
        self.number()
        self.expect(")")
        if name == "Uint8Array":
            return _to_bytes(self.array_items(), self)
        self.expect("{")
        if name == "Set":
            items: list[object] = []
            while not self.take("}"):
                items.append(self.value())
                if not self.take(","):
                    self.expect("}")
                    break
            return JSSet(items)
        pairs: list[tuple[object, object]] = []
        while not self.take("}"):
            key = self.value()
            self.expect("=>")
            pairs.append((key, self.value()))
            if not self.take(","):
                self.expect("}")
                break
        return JSMap(pairs)

    def kv_u64(self, top: bool, display: bool) -> KvU64:
        if display:
            self.expect("[")
            self.expect("Deno.KvU64")
            self.expect(":")
        else:
            self.expect("(")
        n = self.value()
        self.expect("]" if display else ")")
        if not top:
            raise self.fail("a Deno.KvU64 can only be a whole value, not inside another")
        if isinstance(n, bool) or not isinstance(n, int):
            raise self.fail("Deno.KvU64 needs an integer")
        if not 0 <= int(n) < 2**64:
            raise self.fail("Deno.KvU64 must be between 0 and 2^64 - 1")
        return KvU64(int(n))


def _construct(name: str, args: list[object], reader: _Reader) -> object:
    arg = args[0] if args else None
    if name == "Date":
        if isinstance(arg, str):
            return date_from_text(arg)
        if isinstance(arg, int | float) and not isinstance(arg, bool | JSBigInt):
            return date_from_ms(float(arg))
        raise reader.fail("new Date(...) takes an ISO string or a number of ms")
    if name == "Uint8Array":
        return _to_bytes(arg if isinstance(arg, list) else [], reader)
    if name == "Map":
        pairs = []
        for item in arg if isinstance(arg, list) else []:
            if not isinstance(item, list) or len(item) != 2:
                raise reader.fail("new Map(...) takes a list of [key, value] pairs")
            pairs.append((item[0], item[1]))
        return JSMap(pairs)
    if name == "Set":
        return JSSet(arg if isinstance(arg, list) else [])
    raise reader.fail(f"cannot construct {name!r}")


def _to_bytes(items: list[object], reader: _Reader) -> bytes:
    data = bytearray()
    for item in items:
        if type(item) is not int or not 0 <= item <= 255:
            raise reader.fail("a Uint8Array holds integers from 0 to 255")
        data.append(item)
    return bytes(data)
