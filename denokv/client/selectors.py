"""List selectors -> byte ranges, and Deno-compatible list cursors (KV_FACTS §1.6)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from denokv.client.errors import KvValidationError


@dataclass(frozen=True, slots=True)
class Bounds:
    start: bytes
    end: bytes
    common: bytes  # the part of every key in range that a cursor leaves out


def selector_bounds(prefix: bytes | None, start: bytes | None, end: bytes | None) -> Bounds:
    if prefix is not None:
        if start is not None and end is not None:
            raise KvValidationError(
                "Selector can not specify both 'start' and 'end' key when specifying 'prefix'"
            )
        if start is not None:
            if not (start.startswith(prefix) and len(start) > len(prefix)):
                raise KvValidationError("Start key is not in the keyspace defined by prefix")
            return Bounds(start, prefix + b"\xff", prefix)
        if end is not None:
            if not (end.startswith(prefix) and len(end) > len(prefix)):
                raise KvValidationError("End key is not in the keyspace defined by prefix")
            return Bounds(prefix + b"\x00", end, prefix)
        return Bounds(prefix + b"\x00", prefix + b"\xff", prefix)
    if start is None or end is None:
        raise KvValidationError("Selector must specify either 'prefix' or both 'start' and 'end'")
    if start > end:
        raise KvValidationError("Start key is greater than end key")
    return Bounds(start, end, _common_prefix(start, end))


def encode_cursor(bounds: Bounds, last_key: bytes) -> str:
    return base64.urlsafe_b64encode(last_key[len(bounds.common) :]).decode()


def resume(bounds: Bounds, cursor: str, reverse: bool) -> tuple[bytes, bytes]:
    """The range still to read after `cursor`, in the direction of the listing."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
    except (binascii.Error, ValueError):
        raise KvValidationError("invalid cursor") from None
    if base64.urlsafe_b64encode(raw).decode() != cursor:
        raise KvValidationError("invalid cursor")
    last = bounds.common + raw
    if reverse:
        start, end = bounds.start, last
    else:
        start, end = last + b"\x00", bounds.end
    if start < bounds.start or end > bounds.end:
        raise KvValidationError("cursor out of bounds")
    return start, end


def _common_prefix(a: bytes, b: bytes) -> bytes:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]
