"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of an S3 endpoint.

Its behaviour can be switched at run time, per request: `passthrough`, `error_503`,
`drop`, `slow` (see `FaultProxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from urllib.parse import urlsplit

PASSTHROUGH = "passthrough"
ERROR_503 = "error_503"
DROP = "drop"
SLOW = "slow"
MODES = (PASSTHROUGH, ERROR_503, DROP, SLOW)

_MAX_HEAD = 64 * 1024
_IO_TIMEOUT = 30.0  # longest wait for one read/write on either side of a connection
_IDLE_TIMEOUT = 60.0  # how long an idle keep-alive client connection is kept


@dataclass(frozen=True)
class Mode:
    name: str
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ValueError(f"unknown fault mode {self.name!r}; expected one of {MODES}")


def _as_mode(mode: str | Mode, delay: float = 0.0) -> Mode:
    return mode if isinstance(mode, Mode) else Mode(mode, delay)


class _Abandoned(Exception):
    """The client went away while a request was being held."""


class FaultProxy:
    """An HTTP/1.1-aware TCP proxy on 127.0.0.1 in front of an S3 endpoint.

    It runs an asyncio loop in a daemon thread. Each client connection gets its own
    upstream connection; the proxy parses request heads and bodies (Content-Length or
    chunked) so it can decide *per request* what to do, while responses are piped back
    byte for byte. Modes (switch at any time from the test thread):

    * ``passthrough``: forward the request.
    * ``error_503``: don't forward; read the request and answer ``503 Service Unavailable``
      with an S3 ``<Error><Code>SlowDown</Code>...`` body and ``Connection: close``.
    * ``drop``: don't forward; close the client connection at once with a TCP reset
      (SO_LINGER 0), no response. Clients see a reset / "connection closed" error.
    * ``slow`` (``delay`` seconds): read the whole request, hold it for ``delay`` s, then
      forward it. If the client gave up meanwhile (closed its side), the request is NOT
      forwarded unless ``forward_if_abandoned`` is set (which simulates a write that
      timed out for the client but still landed).

    ``fail_next(n, mode)`` applies ``mode`` to the next ``n`` requests only, then the base
    mode (``set_mode``) applies again. ``counts`` tells how many requests each mode
    handled; ``log`` lists ``(mode, method, target)`` per request.

    S3 clients keep connections alive and reuse them. After a faulted response
    (``error_503``, ``drop``) the proxy always closes the client connection, so the next
    request arrives on a new connection; a ``passthrough``/``slow`` connection stays open
    and later requests on it are judged by the mode in force when each one arrives.
    Clients must not pipeline requests (botocore/aiobotocore/urllib3 don't).
    """

    def __init__(self, upstream: str, *, forward_if_abandoned: bool = False) -> None:
        parts = urlsplit(upstream if "//" in upstream else f"http://{upstream}")
        if parts.scheme != "http":
            raise ValueError("FaultProxy only proxies plain http upstreams")
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.forward_if_abandoned = forward_if_abandoned
        self.port: int | None = None
        self._lock = threading.Lock()
        self._mode = Mode(PASSTHROUGH)
        self._pending: list[Mode] = []
        self._counts: Counter[str] = Counter()
        self._log: list[tuple[str, str, str]] = []
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # ---- control (any thread)

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._mode

    def set_mode(self, mode: str | Mode, delay: float = 0.0) -> None:
        """Set the base mode for all following requests (and drop any `fail_next` queue)."""
        m = _as_mode(mode, delay)
        with self._lock:
            self._mode = m
            self._pending.clear()

    def passthrough(self) -> None:
        self.set_mode(PASSTHROUGH)

    def error_503(self) -> None:
        self.set_mode(ERROR_503)

    def drop(self) -> None:
        self.set_mode(DROP)

    def slow(self, seconds: float) -> None:
        self.set_mode(SLOW, seconds)

    def fail_next(self, n: int, mode: str | Mode = ERROR_503, delay: float = 0.0) -> None:
        """Apply `mode` to the next `n` requests (queued after any already pending)."""
        m = _as_mode(mode, delay)
        with self._lock:
            self._pending.extend([m] * n)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def counts(self) -> dict[str, int]:
        """Requests seen per mode name (every mode present, 0 if unused)."""
        with self._lock:
            return {name: self._counts[name] for name in MODES}

    def count(self, mode: str | None = None) -> int:
        """Requests seen in `mode`, or in all modes."""
        with self._lock:
            return sum(self._counts.values()) if mode is None else self._counts[mode]

    @property
    def log(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._log)

    @property
    def connections(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._connections

    def wait_for_count(self, n: int, mode: str | None = None, timeout: float = 10.0) -> bool:
        """Wait until `count(mode)` >= n (e.g. a background uploader's retries); False on
        timeout."""
        deadline = time.monotonic() + timeout
        while self.count(mode) < n:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()
            self._connections = 0

    def _take_mode(self, method: str, target: str) -> Mode:
        with self._lock:
            m = self._pending.pop(0) if self._pending else self._mode
            self._counts[m.name] += 1
            self._log.append((m.name, method, target))
            return m

    # ---- lifecycle

    def start(self, timeout: float = 10) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_MAX_HEAD)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="FaultProxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("FaultProxy did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self, timeout: float = 10) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]  # handlers and pipes
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the proxy (loop thread)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        up_writer: asyncio.StreamWriter | None = None
        pipe: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                method, target, headers = _parse_head(head)
                mode = self._take_mode(method, target)

                if mode.name == DROP:
                    _reset(writer)
                    return

                if mode.name == ERROR_503:
                    # Answer at once if the client waits for "100 Continue"; else drain the
                    # body first so closing doesn't turn into a reset before it reads the 503.
                    if headers.get("expect", "").lower() != "100-continue":
                        await _read_body(reader, headers, None)
                    writer.write(_response_503(target))
                    await asyncio.wait_for(writer.drain(), _IO_TIMEOUT)
                    return

                if mode.name == SLOW:
                    body = await _read_body(reader, headers, None, continue_writer=writer)
                    await asyncio.sleep(mode.delay)
                    if reader.at_eof() and not self.forward_if_abandoned:
                        return  # the client closed its side while we held the request
                    up_writer, pipe = await self._upstream(writer, up_writer, pipe)
                    up_writer.write(_strip_expect(head) + body)
                    await asyncio.wait_for(up_writer.drain(), _IO_TIMEOUT)
                    if reader.at_eof():
                        # Forwarded an abandoned request: let the upstream finish it, then go.
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(pipe, _IO_TIMEOUT)
                        return
                    continue

                # passthrough: stream the body through.
                up_writer, pipe = await self._upstream(writer, up_writer, pipe)
                up_writer.write(head)
                await _read_body(reader, headers, up_writer)
                await asyncio.wait_for(up_writer.drain(), _IO_TIMEOUT)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, _Abandoned):
            return  # OSError covers ConnectionError; ValueError a malformed request head
        finally:
            if pipe is not None:
                pipe.cancel()
            if up_writer is not None:
                up_writer.close()
            writer.close()

    async def _upstream(
        self,
        client: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter | None,
        pipe: asyncio.Task[None] | None,
    ) -> tuple[asyncio.StreamWriter, asyncio.Task[None]]:
        if up_writer is not None and pipe is not None and not pipe.done():
            return up_writer, pipe
        if pipe is not None and pipe.done():
            raise ConnectionResetError("upstream closed the connection")
        up_reader, new_writer = await asyncio.wait_for(
            asyncio.open_connection(self.upstream_host, self.upstream_port), _IO_TIMEOUT
        )
        new_pipe = asyncio.get_running_loop().create_task(_pipe(up_reader, client))
        return new_writer, new_pipe


def _strip_expect(head: bytes) -> bytes:
    """Drop `Expect:` from a request head whose body we already have (and acknowledged)."""
    lines = head.split(b"\r\n")
    return b"\r\n".join(ln for ln in lines if not ln.lower().startswith(b"expect:"))


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    method, target = (parts[0], parts[1]) if len(parts) >= 2 else (lines[0], "")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _read_body(
    reader: asyncio.StreamReader,
    headers: dict[str, str],
    forward: asyncio.StreamWriter | None,
    continue_writer: asyncio.StreamWriter | None = None,
) -> bytes:
    """Read one request body; send it on to `forward` as it comes, or return it."""
    chunks: list[bytes] = []

    async def read(coro: Awaitable[bytes]) -> bytes:
        data = await asyncio.wait_for(coro, _IO_TIMEOUT)
        if forward is not None:
            forward.write(data)
            await asyncio.wait_for(forward.drain(), _IO_TIMEOUT)
        else:
            chunks.append(data)
        return data

    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = int(headers.get("content-length", "0") or 0)
    expects = headers.get("expect", "").lower() == "100-continue"
    if continue_writer is not None and expects and (chunked or length):
        # We hold the request, so we must ask for its body ourselves (and strip the
        # Expect header before forwarding it).
        continue_writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if chunked:
        while True:
            size_line = await read(reader.readuntil(b"\r\n"))
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await read(reader.readuntil(b"\r\n"))) != b"\r\n":
                    pass  # trailers, up to the empty line
                break
            await read(reader.readexactly(size + 2))
    else:
        remaining = length
        while remaining > 0:
            data = await read(reader.read(min(remaining, 1 << 16)))
            if not data:
                raise _Abandoned
            remaining -= len(data)
    return b"".join(chunks)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy upstream responses to the client until either side closes."""
    try:
        while True:
            data = await asyncio.wait_for(src.read(1 << 16), _IDLE_TIMEOUT)
            if not data:
                break
            dst.write(data)
            await asyncio.wait_for(dst.drain(), _IO_TIMEOUT)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        dst.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _response_503(target: str) -> bytes:
    resource = target.split("?", 1)[0]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
        f"<Resource>{_xml_escape(resource)}</Resource>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode()
    return head + body


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
