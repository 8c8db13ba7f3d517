"""The unary KV Connect calls: metadata exchange, `snapshot_read`, `atomic_write`.

Each call takes the request (headers and a body reader, whatever the HTTP
interface) and returns `(status, content type, body)`. Errors are raised and
answered by the pipeline's one error ladder. These are the hot paths (every
`kv.get` and every commit), so they use no web framework at all.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from denokv import texts as T
from denokv.operations import WriteResult, WriteStatus
from denokv.proto import datapath_pb2 as pb
from denokv.server import convert
from denokv.server.errors import HttpError
from denokv.server.host import CallsHost, Incoming
from denokv.server.metadata import negotiate, response_body
from denokv.server.pipeline import JSON, PROTOBUF, Reply


class UnaryCalls:
    def __init__(self, server: CallsHost) -> None:
        self.server = server

    async def metadata(self, request: Incoming) -> Reply:
        headers = request.headers
        body = await request.body()
        version = negotiate(headers.get("content-type"), body)
        token = self.server.auth.check_bearer(headers.get("authorization"))
        server = self.server
        document = response_body(
            version, str(server.auth.database_id), server.config.endpoints, token, None
        )
        return 200, JSON, document

    async def snapshot_read(self, request: Incoming) -> Reply:
        server = self.server
        server.admit(request.headers)
        ranges = convert.read_ranges(parse_message(pb.SnapshotRead(), await request.body()))
        engine = server.engine
        if engine.reads_inline:  # every kv.get: with one reader, no coroutine of its own
            rows = engine.read_rows(ranges)
        else:
            rows = await engine.snapshot_read_rows(ranges)
        return 200, PROTOBUF, convert.read_output(rows, server.config.reads_strongly_consistent)

    async def forward_snapshot_read(self, request: Incoming) -> Reply:
        self.server.admit(request.headers)
        return await self.forward_read_body(await request.body())

    async def atomic_write(self, request: Incoming) -> Reply:
        self.server.admit(request.headers)
        return await self.write_body(await request.body())

    # The calls past admission, also run for a worker process by the main one.

    async def forward_read_body(self, body: bytes) -> Reply:
        ranges = convert.read_ranges(parse_message(pb.SnapshotRead(), body))  # bad input: 400
        server = self.server
        forwarder = server.config.forwarder
        if forwarder is None:  # nowhere to forward to: this process's reads are the answer
            results = await server.engine.snapshot_read_rows(ranges)
            return (
                200,
                PROTOBUF,
                convert.read_output(results, server.config.reads_strongly_consistent),
            )
        return _as_reply(await forwarder.forward("snapshot_read", body))

    async def write_body(self, body: bytes) -> Reply:
        server = self.server
        write = convert.atomic_write(parse_message(pb.AtomicWrite(), body))
        config = server.config
        if config.forwarder is not None:
            return _as_reply(await config.forwarder.forward("atomic_write", body))
        if not config.accept_writes:
            return 200, PROTOBUF, convert.write_output(WriteResult(WriteStatus.WRITE_DISABLED))
        result = await server.engine.atomic_write(write)  # WriteError: 400 via the pipeline
        return 200, PROTOBUF, convert.write_output(result)


def parse_message(msg: Any, body: bytes) -> Any:
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise HttpError(
            400, T.INVALID_PROTOBUF.format(err=f"failed to decode Protobuf message: {exc}")
        ) from None
    return msg


def _as_reply(forwarded: tuple[int, bytes | str, bytes]) -> Reply:
    status, content_type, body = forwarded
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return status, content_type, body
