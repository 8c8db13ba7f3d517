"""The server on ASGI (hypercorn, or granian's ASGI interface): the same pipeline as RSGI.

The KV routes are served directly on ASGI messages; everything else goes to
the Starlette app, whose `receive` is wrapped so its bodies are read by the
same body reader, under the same size and time bounds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from denokv.server.pipeline import ClientGone, Reply, Stream, error_reply, stream_until_gone

if TYPE_CHECKING:
    from denokv.server.host import FrontHost
    from denokv.server.pipeline import BodyPolicy

_ALLOW_POST = [(b"allow", b"POST")]


class AsgiRequest:
    __slots__ = ("_policy", "_receive", "headers")

    def __init__(self, headers: dict[str, str], receive: Any, policy: BodyPolicy) -> None:
        self.headers = headers
        self._receive = receive
        self._policy = policy

    async def body(self) -> bytes:
        self._policy.check_declared(self.headers.get("content-length"))
        return await self._policy.read(_chunks(self._receive), None)


async def _chunks(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class AsgiFront:
    """The ASGI application of one KvServer."""

    def __init__(self, server: FrontHost) -> None:
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = self.server
        if scope["type"] != "http":
            await server.framework(scope, receive, send)  # lifespan
            return
        nudger = server.nudger
        if nudger is not None:
            _nudge(nudger, scope.get("client"), scope.get("server"))
        route = server.routes.get(scope["path"])
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request = AsgiRequest(headers, receive, server.body_policy)
        if route is None:
            await _framework(server, scope, request, receive, send)
            return
        if scope["method"] != "POST":
            await _respond(send, 405, "text/plain; charset=utf-8", b"", _ALLOW_POST)
            return
        started = time.perf_counter()
        reply: Reply | Stream | None
        try:
            reply = await route.call(request)
        except Exception as exc:  # the one ladder, for every KV route
            reply = error_reply(exc, route.name)
            if reply is None:
                return
        if isinstance(reply, Stream):
            server.observe(route.name, reply.status, time.perf_counter() - started)
            await _stream(send, receive, reply, route.name)
            return
        await _respond(send, *reply)
        server.observe(route.name, reply[0], time.perf_counter() - started)


def _nudge(nudger: Any, client: Any, local: Any) -> None:
    """Prompt ACK for TCP peers; Unix sockets and test transports have no port.

    Ports are ints under hypercorn and strings under granian's ASGI.
    """
    if not client or not local:
        return
    peer_port, local_port = _port(client[1]), _port(local[1])
    if peer_port is not None and local_port is not None:
        nudger.nudge((client[0], peer_port), local_port)


def _port(value: object) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


async def _respond(send: Any, status: int, content_type: str, body: bytes,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Any, receive: Any, reply: Stream, what: str) -> None:
    """Send frames until they end or the client disconnects, whichever comes first."""
    frames = reply.frames

    async def pump() -> None:
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(b"content-type", reply.content_type.encode())]})  # fmt: skip
        async for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    await stream_until_gone(pump(), disconnected(), reply, what)


async def _framework(server: FrontHost, scope: Any, request: AsgiRequest, receive: Any,
                     send: Any) -> None:  # fmt: skip
    """The Starlette app, its body read by the pipeline's reader."""
    body_read = False
    started = False

    async def limited_receive() -> dict[str, Any]:
        nonlocal body_read
        if not body_read:
            body_read = True
            return {"type": "http.request", "body": await request.body(), "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    async def tracking_send(message: dict[str, Any]) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await server.framework(scope, limited_receive, tracking_send)
    except Exception as exc:
        if not started:
            reply = error_reply(exc, scope["path"])
            if reply is not None:
                await _respond(send, *reply)
        # else: the framework's error handler answered it and logged it already
