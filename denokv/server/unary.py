"""The unary data-path calls (`snapshot_read`, `atomic_write`) on raw ASGI.

These are the hot paths: every `kv.get` and every commit. They skip the web
framework's request and response objects and routing (about half the CPU per
call in profiles) and speak ASGI directly; the answers, texts and statuses are
exactly those of the framework routes they replace.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import DecodeError

from denokv import limits as L
from denokv.operations import EngineUnavailable, WriteError, WriteResult, WriteStatus
from denokv.proto import datapath_pb2 as pb
from denokv.server import convert
from denokv.server.errors import HttpError

PROTOBUF = b"application/x-protobuf"
TEXT = b"text/plain; charset=utf-8"

Reply = tuple[int, bytes, bytes]  # status, content type, body
Call = Callable[[bytes], Awaitable[Reply]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class UnaryCalls:
    """Serves the unary calls of one KvServer: `handle` is an ASGI endpoint."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.routes: dict[str, tuple[str, Call]] = {
            "/v2/snapshot_read": ("snapshot_read", self.snapshot_read),
            "/v2/atomic_write": ("atomic_write", self.atomic_write),
        }
        if server.config.forwarder is not None:
            self.routes["/strong/v2/snapshot_read"] = (
                "strong_snapshot_read", self.forward_snapshot_read,
            )  # fmt: skip
            self.routes["/strong/v2/atomic_write"] = ("atomic_write", self.atomic_write)

    async def handle(self, name: str, call: Call, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        if scope["method"] != "POST":
            await _respond(send, 405, TEXT, b"")
            return
        server = self.server
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            server.admit(headers)
            body = await _read_body(headers, receive)
            status, content_type, payload = await call(body)
        except HttpError as exc:
            status, content_type, payload = exc.status, TEXT, exc.text.encode()
        except EngineUnavailable as exc:
            status, content_type, payload = 503, TEXT, str(exc).encode()
        except sqlite3.Error as exc:
            server.log.error("database error on %s: %s", scope["path"], exc)
            status, content_type, payload = 500, TEXT, L.INTERNAL_ERROR.encode()
        except ClientGone:
            return
        await _respond(send, status, content_type, payload)
        server.metrics.observe(name, status, time.perf_counter() - started)

    # -- the calls ------------------------------------------------------------------

    async def snapshot_read(self, body: bytes) -> Reply:
        ranges = convert.read_ranges(parse_message(pb.SnapshotRead(), body))
        results = await self.server.engine.snapshot_read(ranges)
        strong = self.server.config.reads_strongly_consistent
        return 200, PROTOBUF, convert.read_output(results, strong)

    async def forward_snapshot_read(self, body: bytes) -> Reply:
        msg = parse_message(pb.SnapshotRead(), body)
        convert.read_ranges(msg)  # bad input is refused here, with the same texts
        return await self.server.config.forwarder.forward("snapshot_read", body)

    async def atomic_write(self, body: bytes) -> Reply:
        config = self.server.config
        write = convert.atomic_write(parse_message(pb.AtomicWrite(), body))
        if config.forwarder is not None:
            return await config.forwarder.forward("atomic_write", body)
        if not config.accept_writes:
            return 200, PROTOBUF, convert.write_output(WriteResult(WriteStatus.WRITE_DISABLED))
        try:
            result = await self.server.engine.atomic_write(write)
        except WriteError as exc:
            raise HttpError(400, str(exc)) from None
        return 200, PROTOBUF, convert.write_output(result)


def parse_message(msg: Any, body: bytes) -> Any:
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise HttpError(
            400, L.INVALID_PROTOBUF.format(err=f"failed to decode Protobuf message: {exc}")
        ) from None
    return msg


async def _read_body(headers: dict[str, str], receive: Any) -> bytes:
    """At most 2 MiB; larger bodies are refused before they are buffered."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > L.MAX_REQUEST_BODY:
        raise HttpError(413, L.BODY_TOO_LARGE)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body  # the common case: the whole body in one message
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > L.MAX_REQUEST_BODY:
            await _discard_rest(receive, message)
            raise HttpError(413, L.BODY_TOO_LARGE)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _discard_rest(receive: Any, message: Any, limit: int = 4 * L.MAX_REQUEST_BODY) -> None:
    """Read (without keeping) what the client is still sending, up to a bound.

    An HTTP/2 client blocked on flow control would otherwise never get to read
    the 413; past the bound we stop reading and let the connection deal with it.
    """
    seen = 0
    while message.get("more_body", False) and seen < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        seen += len(message.get("body", b""))


async def _respond(send: Any, status: int, content_type: bytes, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
