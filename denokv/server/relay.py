"""A worker process's other routes, relayed to the main process (ASGI → HTTP on a Unix socket).

`/metrics` and `/console/` describe the whole server, so a worker does not
answer them itself: it passes the request to the main
process's private listener and streams the answer back as it comes (the
console's live view is a stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from denokv import texts as T

_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"host"})


class Relay:
    def __init__(self, socket_path: str) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://main",
            timeout=httpx.Timeout(30.0, read=None),  # streams stay open as long as they run
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        path = scope["path"] + (
            f"?{scope['query_string'].decode()}" if scope["query_string"] else ""
        )
        request = self._client.build_request(scope["method"], path, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError:
            await _plain(send, 503, T.UNAVAILABLE.encode())
            return
        pump = asyncio.create_task(self._pump(response, send))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            # A client that leaves ends the relayed stream too (the console's live view).
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            await response.aclose()

    async def _pump(self, response: httpx.Response, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP],
            }
        )
        with contextlib.suppress(httpx.HTTPError):
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def close(self) -> None:
        await self._client.aclose()


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})
