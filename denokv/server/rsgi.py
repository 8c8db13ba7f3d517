"""The server on granian's RSGI interface: the KV routes directly, the rest through ASGI.

RSGI hands us the request's headers as soon as they arrive and lets us read
the body and answer with one call each, without ASGI's message dicts: here
it served a trivial app at 1.3x (HTTP/1.1) and 1.55x (h2c) the requests/s of
granian's ASGI interface. Routes that are not KV Connect (health, metrics,
unknown paths) go to the Starlette app through a small RSGI → ASGI bridge,
with the same body reader and error ladder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from denokv.server.pipeline import ClientGone, Reply, Stream, error_reply, stream_until_gone

if TYPE_CHECKING:
    from denokv.server.host import FrontHost
    from denokv.server.pipeline import BodyPolicy
    from denokv.server.tcp import AckNudger, Key

log = logging.getLogger("denokv.server")

_ALLOW_POST = [("allow", "POST")]


def _closed_errors() -> tuple[type[BaseException], ...]:
    try:
        from granian.rsgi import ProtocolClosed
    except ImportError:  # granian not installed: this module is never served
        return (ConnectionError,)
    return (ProtocolClosed, ConnectionError)


_CLOSED = _closed_errors()


class RsgiRequest:
    """A request as the KV calls see it: headers, and a body read under the policy."""

    __slots__ = ("_policy", "_proto", "_read", "headers")

    def __init__(self, headers: Any, proto: Any, policy: BodyPolicy) -> None:
        self.headers = headers
        self._proto = proto
        self._policy = policy
        self._read = False

    async def discard_unread(self) -> None:
        """Before an answer given without the body: read it, so the upload cannot stall.

        Over HTTP/2 granian now and then neither resets such a stream nor reads
        on, and a client whose body is larger than its flow-control window then
        waits for credit that never comes (see `BodyPolicy._drain`).
        """
        if not self._read:
            self._read = True
            await self._policy.discard(_chunks(self._proto))

    async def body(self) -> bytes:
        self._read = True
        policy = self._policy
        declared = policy.check_declared(self.headers.get("content-length"))
        try:
            if declared is not None:
                # granian reads exactly the declared length (HTTP/1.1 framing; h2
                # refuses DATA beyond content-length), already checked above.
                return await policy.read(None, self._proto())
            return await policy.read(_chunks(self._proto), None)
        except _CLOSED:
            raise ClientGone() from None


async def _chunks(proto: Any) -> AsyncIterator[bytes]:
    async for chunk in proto:
        yield chunk


def split_address(address: str) -> tuple[str, int] | None:
    """'127.0.0.1:5000' or '[::1]:5000' → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class RsgiFront:
    """The RSGI application of one KvServer."""

    def __init__(self, server: FrontHost) -> None:
        self.server = server
        self.routes = server.routes
        self.policy = server.body_policy
        self.observe = server.observe
        self._addresses: dict[tuple[str, str], Key | None] = {}

    async def __call__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return  # websockets are off; nothing else arrives here
        nudger = self.server.nudger
        if nudger is not None:
            self._nudge(nudger, scope.client, scope.server)
        route = self.routes.get(scope.path)
        if route is None:
            await asgi_bridge(self.server, scope, proto)
            return
        if scope.method != "POST":
            proto.response_empty(405, _ALLOW_POST)
            return
        started = time.perf_counter()
        reply: Reply | Stream | None
        request = RsgiRequest(scope.headers, proto, self.policy)
        try:
            reply = await route.call(request)
        except Exception as exc:  # the one ladder, for every KV route
            reply = error_reply(exc, route.name)
            if reply is None:
                return
            await request.discard_unread()
        if isinstance(reply, Stream):
            status = reply.status
            self.observe(route.name, status, time.perf_counter() - started)
            await _stream(proto, reply, route.name)
            return
        status, content_type, body = reply
        try:
            proto.response_bytes(status, [("content-type", content_type)], body)
        except _CLOSED:
            return
        self.observe(route.name, status, time.perf_counter() - started)

    def _nudge(self, nudger: AckNudger, client: str, server: str) -> None:
        cache = self._addresses
        try:
            key = cache[(client, server)]
        except KeyError:
            peer = split_address(client)
            local = split_address(server)
            key = None if peer is None or local is None else nudger.key_of(peer, local[1])
            if len(cache) > 4096:
                cache.clear()
            cache[(client, server)] = key
        if key is not None:
            nudger.nudge_key(key)


async def _stream(proto: Any, reply: Stream, what: str) -> None:
    """Send frames until they end or the client goes away, whichever comes first."""
    frames = reply.frames

    async def pump() -> None:
        transport = proto.response_stream(reply.status, [("content-type", reply.content_type)])
        async for frame in frames:
            await transport.send_bytes(frame)

    await stream_until_gone(pump(), proto.client_disconnect(), reply, what, _CLOSED)


# -- the RSGI → ASGI bridge for the framework routes --------------------------------


async def asgi_bridge(server: FrontHost, scope: Any, proto: Any) -> None:
    """Serve one request with the ASGI framework app, on RSGI's calls."""
    request = RsgiRequest(scope.headers, proto, server.body_policy)
    asgi_scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode(),
        "query_string": scope.query_string.encode(),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
        "client": split_address(scope.client),
        "server": split_address(scope.server),
    }
    sender = _AsgiSender(proto)
    body_read = False

    async def receive() -> dict[str, Any]:
        nonlocal body_read
        if not body_read:
            body_read = True
            return {"type": "http.request", "body": await request.body(), "more_body": False}
        try:
            await proto.client_disconnect()
        except _CLOSED:
            pass
        return {"type": "http.disconnect"}

    try:
        await server.framework(asgi_scope, receive, sender)
    except Exception as exc:
        if not sender.started:
            reply = error_reply(exc, scope.path)
            if reply is not None:
                sender.plain(*reply)
        # else: the framework's error handler answered it and logged it already


class _AsgiSender:
    """ASGI `send` on RSGI: one response_bytes call, or a stream for chunked bodies."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.started = False
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.transport: Any = None

    def plain(self, status: int, content_type: str, body: bytes) -> None:
        self.started = True
        try:
            self.proto.response_bytes(status, [("content-type", content_type)], body)
        except _CLOSED:
            pass

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.status = message["status"]
            self.headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())
            ]
            return
        if kind != "http.response.body":
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        try:
            if self.transport is None and not more:
                self.proto.response_bytes(self.status, self.headers, body)
                return
            if self.transport is None:
                self.transport = self.proto.response_stream(self.status, self.headers)
            if body:
                await self.transport.send_bytes(body)
        except _CLOSED:
            pass  # the client is gone; the framework learns it from receive()
