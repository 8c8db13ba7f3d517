"""The one request pipeline: body reading, the error ladder, and what a handler returns.

Every route, the KV Connect fast path and the framework routes alike, reads
its body through `BodyPolicy` (at most 2 MiB, all of it within a bounded
time) and turns exceptions into answers through `error_reply`, so a rule
changes in one place. The HTTP interfaces (RSGI on granian, ASGI on
hypercorn) only adapt these to their own send and receive calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

from denokv import limits as L
from denokv import texts as T
from denokv.engine_errors import EngineUnavailable, WriteError
from denokv.server.errors import HttpError

log = logging.getLogger("denokv.server")

TEXT = "text/plain; charset=utf-8"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
OCTETS = "application/octet-stream"
DRAIN_FACTOR = 4  # refused bodies up to 4x the limit are read to their end (BodyPolicy._drain)

# status, content type, body
Reply = tuple[int, str, bytes]


@dataclass(slots=True)
class Stream:
    """A streamed answer (watch): frames are sent as the iterator yields them."""

    content_type: str
    frames: AsyncGenerator[bytes, None]
    status: int = 200


class ClientGone(Exception):
    """The client went away before its request was answered; nothing is sent."""


async def stream_until_gone(
    pump: Coroutine[Any, Any, None],
    gone: Awaitable[object],
    reply: Stream,
    what: str,
    closed: tuple[type[BaseException], ...] = (),
) -> None:
    """Run `pump` (which sends `reply`'s frames) until it ends or `gone` says the client
    left, whichever comes first, then close the frames.

    A failure of the pump is logged through `error_reply` (the answer has begun, so
    nothing more is sent), unless it is one of `closed`: the connection went away
    under it.
    """
    pumping = asyncio.ensure_future(pump)
    leaving = asyncio.ensure_future(gone)
    try:
        await asyncio.wait({pumping, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, leaving):
            task.cancel()
        for task in (pumping, leaving):
            with contextlib.suppress(BaseException):
                await task
        failure = pumping.exception() if pumping.done() and not pumping.cancelled() else None
        if failure is not None and not isinstance(failure, closed):
            error_reply(failure, what)
        await reply.frames.aclose()


def error_reply(exc: BaseException, what: str) -> Reply | None:
    """The answer for an exception raised while serving `what`; None: send nothing.

    Anything not listed is a bug: its traceback is logged here, once, and the
    client gets a 500 (which Deno retries).
    """
    if isinstance(exc, HttpError):
        return exc.status, TEXT, exc.text.encode()
    if isinstance(exc, EngineUnavailable):
        return 503, TEXT, str(exc).encode()
    if isinstance(exc, WriteError):
        return 400, TEXT, str(exc).encode()
    if isinstance(exc, ClientGone):
        return None
    log.error("unexpected error while serving %s", what, exc_info=exc)
    return 500, TEXT, T.INTERNAL_ERROR.encode()


class BodyPolicy:
    """How much of a request body we take, and for how long we wait for it.

    Deadlines are checked by one timer a second for all requests together, so
    a request pays a dict insert and delete, not a timer of its own: a body
    still incomplete after `timeout_s` (plus at most a second) is cut off with
    408. 408 rather than 503: the client's connection is what was too slow,
    and Deno retries 5xx forever.
    """

    def __init__(self, timeout_s: float = L.REQUEST_BODY_TIMEOUT_S,
                 max_size: int = L.MAX_REQUEST_BODY) -> None:  # fmt: skip
        self.timeout_s = timeout_s
        self.max_size = max_size
        # An oversized body up to this size is read to its end before the 413.
        self.drain_limit = DRAIN_FACTOR * max_size
        self._waiting: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._ticking = False

    def check_declared(self, content_length: str | None) -> int | None:
        """The declared length if the body may be read whole, else None (read it in chunks).

        A declared length above the limit but within `drain_limit` is read in
        chunks too, and discarded, before the 413; a larger one gets its 413
        before anything is read.
        """
        if content_length is None or not content_length.isdigit():
            return None
        declared = int(content_length)
        if declared > self.drain_limit:
            raise HttpError(413, T.BODY_TOO_LARGE)
        return declared if declared <= self.max_size else None

    async def read(
        self, reader: AsyncIterator[bytes] | None, whole: Awaitable[bytes] | None
    ) -> bytes:
        """Await `whole` (an awaitable giving the full body) or join `reader`'s chunks."""
        task = asyncio.current_task()
        if task is None:  # not inside a task: nothing to cancel, read without a deadline
            return await whole if whole is not None else await self._join(reader)
        loop = asyncio.get_running_loop()
        self._waiting[task] = loop.time() + self.timeout_s
        if not self._ticking:
            self._ticking = True
            loop.call_later(1.0, self._tick, loop)
        try:
            body = await whole if whole is not None else await self._join(reader)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise HttpError(408, T.BODY_TIMEOUT) from None
        finally:
            self._waiting.pop(task, None)
        if task in self._expired:  # the body came just as its time ran out
            await _absorb_cancel(task)
            self._expired.discard(task)
        return body

    async def _join(self, reader: AsyncIterator[bytes] | None) -> bytes:
        assert reader is not None
        chunks = []
        size = 0
        async for chunk in reader:
            size += len(chunk)
            if size > self.max_size:
                await self._drain(reader, size)
                raise HttpError(413, T.BODY_TOO_LARGE)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _drain(self, reader: AsyncIterator[bytes], size: int) -> None:
        """Read the rest of a refused body, up to `drain_limit`, and drop it.

        Answering before the client has sent its whole body leaves it to the
        HTTP server to stop the upload: over HTTP/2 it should reset the stream,
        and now and then granian neither resets it nor reads on, so the client
        waits for flow-control credit that never comes (with the connection's
        other streams). A body read to its end cannot stall.
        """
        async for chunk in reader:
            size += len(chunk)
            if size > self.drain_limit:
                return

    async def discard(self, reader: AsyncIterator[bytes]) -> None:
        """Read and drop a body that an early answer (401, 400, ...) did not need.

        Bounded like a refused body: at most `drain_limit` bytes, within the
        body deadline; a connection that breaks meanwhile ends it quietly.
        """
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain(reader, 0), self.timeout_s)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._waiting.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._expired.intersection_update(self._waiting)
        if self._waiting:
            loop.call_later(1.0, self._tick, loop)
        else:
            self._ticking = False


async def _absorb_cancel(task: asyncio.Task[object]) -> None:
    """Take the cancellation a deadline requested but no longer needs."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        task.uncancel()
