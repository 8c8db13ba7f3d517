"""Frames between the main server process and its worker processes (a Unix socket pair).

Each frame is `length (u32) ‖ kind (u8) ‖ id (u32) ‖ payload`, little-endian:

| kind | direction | payload |
|---|---|---|
| CALL | worker → main | method (u8) ‖ request body: a write (or a strong read) to run |
| REPLY | main → worker | status (u16) ‖ content-type length (u8) ‖ content type ‖ body |
| TOUCHED | main → worker | the keys a commit touched: count (u32), then length (u32) ‖ key |
| WAKE_ALL | main → worker | every watcher must look again (a replica swapped its data) |
| NOT_READY | main → worker | why data calls must wait (UTF-8), empty when ready |
| STATS | worker → main | its request counts and read cache figures (JSON, `Metrics.snapshot`) |
| READY | worker → main | the worker listens on the shared port |
| HEALTH | main → worker | the server's readiness problems and fatal problem (JSON), every 0.2 s |
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterable
from enum import IntEnum

HEADER = struct.Struct("<IBI")
MAX_FRAME = 8 * 1024 * 1024  # a request body is at most 2 MiB; anything far larger is a bug


class Kind(IntEnum):
    CALL = 1
    REPLY = 2
    TOUCHED = 3
    WAKE_ALL = 4
    NOT_READY = 5
    STATS = 6
    READY = 7
    HEALTH = 8


class Method(IntEnum):
    ATOMIC_WRITE = 1
    SNAPSHOT_READ = 2  # a strong read a replica forwards to its primary


class FrameError(Exception):
    """The other side sent something that is not a frame."""


def frame(kind: Kind, ident: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, ident) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[Kind, int, bytes] | None:
    """The next frame, or None when the other side closed the connection."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    length, kind, ident = HEADER.unpack(head)
    if length > MAX_FRAME:
        raise FrameError(f"a frame of {length} bytes")
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    try:
        return Kind(kind), ident, payload
    except ValueError:
        raise FrameError(f"unknown frame kind {kind}") from None


def encode_reply(status: int, content_type: str, body: bytes) -> bytes:
    ctype = content_type.encode()
    return struct.pack("<HB", status, len(ctype)) + ctype + body


def decode_reply(payload: bytes) -> tuple[int, str, bytes]:
    status, n = struct.unpack_from("<HB", payload)
    ctype = payload[3 : 3 + n].decode()
    return status, ctype, payload[3 + n :]


def encode_keys(keys: Iterable[bytes]) -> bytes:
    keys = list(keys)
    parts = [struct.pack("<I", len(keys))]
    for key in keys:
        parts.append(struct.pack("<I", len(key)))
        parts.append(key)
    return b"".join(parts)


def decode_keys(payload: bytes) -> list[bytes]:
    (count,) = struct.unpack_from("<I", payload)
    offset = 4
    keys = []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", payload, offset)
        offset += 4
        keys.append(payload[offset : offset + n])
        offset += n
    return keys


def encode_health(problems: list[str], fatal: str | None) -> bytes:
    return json.dumps({"problems": problems, "fatal": fatal}).encode()


def decode_health(payload: bytes) -> tuple[list[str], str | None]:
    """(problems, fatal) from a HEALTH payload; malformed parts read as a problem."""
    try:
        got = json.loads(payload)
        problems, fatal = got["problems"], got["fatal"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"the main process sent an unreadable health report ({exc})"], None
    if not isinstance(problems, list) or not (fatal is None or isinstance(fatal, str)):
        return ["the main process sent an unreadable health report"], None
    return [str(p) for p in problems], fatal
