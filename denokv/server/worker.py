"""A worker server process (`python -m denokv.server.worker`; see `denokv.server.processes`).

It reads its `WorkerSpec` as JSON on stdin, opens read connections to the
database file, and serves the KV Connect data path on the shared port: reads
here, writes through the main process, watches woken by the main process's
commit news, every other route relayed to the main process. It stops when told
to (SIGTERM) or when the main process goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import sys
from typing import Any

from denokv.engine import Engine
from denokv.read_cache import WriteCounters
from denokv.server import ipc
from denokv.server.app import KvServer, ServerConfig
from denokv.server.metadata import Endpoint

log = logging.getLogger("denokv.worker")

STATS_EVERY_S = 1.0
# The main process reports every 0.2 s; this long without a report, it is stuck.
MAIN_SILENT_S = 3.0


class MainProcess:
    """The worker's line to the main process: a `Forwarder` for writes, and its news."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[int, str, bytes]]] = {}
        self.not_ready: str | None = None
        self.closed = asyncio.Event()
        self._main_problems: list[str] = []
        self._main_fatal: str | None = None
        self._reported_at: float | None = None  # loop time of the last HEALTH frame

    async def forward(self, method: str, body: bytes) -> tuple[int, str, bytes]:
        """Run a write (or a forwarded strong read) in the main process; its reply."""
        if self.closed.is_set():
            from denokv import texts as T

            return 503, "text/plain; charset=utf-8", T.UNAVAILABLE.encode()
        ident = next(self._ids)
        future: asyncio.Future[tuple[int, str, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        code = ipc.Method.ATOMIC_WRITE if method == "atomic_write" else ipc.Method.SNAPSHOT_READ
        self._writer.write(ipc.frame(ipc.Kind.CALL, ident, bytes([code]) + body))
        try:
            return await future
        finally:
            self._waiting.pop(ident, None)

    def send_ready(self) -> None:
        self._writer.write(ipc.frame(ipc.Kind.READY, 0))

    def send_stats(self, snapshot: dict[str, Any]) -> None:
        if not self.closed.is_set():
            self._writer.write(ipc.frame(ipc.Kind.STATS, 0, json.dumps(snapshot).encode()))

    def problems(self) -> list[str]:
        """The whole server's reasons not to be ready, as the main process last told."""
        if self.closed.is_set():
            return ["the main server process is gone"]
        if self._reported_at is None:
            return ["waiting for the main server process's first report"]
        silent = asyncio.get_running_loop().time() - self._reported_at
        if silent > MAIN_SILENT_S:
            return [f"the main server process has not reported for {silent:.1f} s"]
        return self._main_problems

    def fatal(self) -> str | None:
        """What keeps the whole server from serving writes again, if anything."""
        if self.closed.is_set():
            return "the main server process is gone"
        return self._main_fatal

    async def listen(self, engine: Engine) -> None:
        """Apply the main process's news until it goes away."""
        try:
            while (got := await ipc.read_frame(self._reader)) is not None:
                kind, ident, payload = got
                if kind is ipc.Kind.REPLY:
                    future = self._waiting.get(ident)
                    if future is not None and not future.done():
                        future.set_result(ipc.decode_reply(payload))
                elif kind is ipc.Kind.TOUCHED:
                    engine.watches.notify_here(ipc.decode_keys(payload))
                elif kind is ipc.Kind.WAKE_ALL:
                    engine.watches.wake_all()
                elif kind is ipc.Kind.NOT_READY:
                    self.not_ready = payload.decode() or None
                elif kind is ipc.Kind.HEALTH:
                    self._main_problems, self._main_fatal = ipc.decode_health(payload)
                    self._reported_at = asyncio.get_running_loop().time()
        except (ipc.FrameError, ConnectionError) as exc:
            log.error("the line to the main process broke: %s", exc)
        self.closed.set()
        from denokv import texts as T

        for future in self._waiting.values():
            if not future.done():
                future.set_result((503, "text/plain; charset=utf-8", T.UNAVAILABLE.encode()))


async def _listening(port: int, serving: asyncio.Task[None], timeout: float = 30.0) -> bool:
    """Wait until this process holds a listening socket on `port` (granian bound it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not serving.done() and loop.time() < deadline:
        if port in _own_listening_ports():
            return True
        await asyncio.sleep(0.02)
    return False


def _own_listening_ports() -> set[int]:
    """Local ports of the TCP sockets in LISTEN state that this process has open."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _config(spec: dict[str, Any], main: MainProcess) -> ServerConfig:
    fields = dict(spec["config"])
    fields["endpoints"] = [Endpoint(url, consistency) for url, consistency in fields["endpoints"]]
    token_file = fields.pop("token_file", None)
    config = ServerConfig(**fields)
    config.forwarder = main  # every write (and strong read) runs in the main process
    config.not_ready = lambda: main.not_ready
    config.main_health = main
    config.relay_path = spec["relay_path"]
    if token_file:
        from denokv.server.auth import read_token_file

        config.token_source = lambda: read_token_file(token_file)
    return config


async def _run(spec: dict[str, Any]) -> None:
    sock = socket.socket(fileno=spec["ipc_fd"])
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    main = MainProcess(reader, writer)
    counters_fd = spec.get("counters_fd")
    engine = Engine(
        spec["sqlite_path"],
        writer=False,
        readers=spec.get("readers", 1),
        write_counters=WriteCounters(counters_fd) if counters_fd is not None else None,
        read_cache_bytes=spec.get("read_cache_bytes", 0),
    )
    server = KvServer(engine, _config(spec, main))
    server.metrics.process = str(spec["index"])

    async def stats() -> None:
        while not main.closed.is_set():
            await asyncio.sleep(STATS_EVERY_S)
            main.send_stats(server.metrics.snapshot())

    from denokv.server.http import serve

    listening = asyncio.create_task(main.listen(engine))
    reporting = asyncio.create_task(stats())
    serving = asyncio.create_task(serve(server, spec["host"], spec["port"], "granian", quiet=True))
    gone = asyncio.create_task(main.closed.wait())
    if await _listening(spec["port"], serving):
        main.send_ready()
    try:
        await asyncio.wait({serving, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():  # the main process went away: stop as if told to
            os.kill(os.getpid(), 15)
            await serving
    finally:
        main.send_stats(server.metrics.snapshot())
        for task in (listening, reporting, gone):
            task.cancel()
        with contextlib.suppress(Exception):
            writer.close()
        engine.close()


def main() -> int:
    spec = json.loads(sys.stdin.read())
    logging.basicConfig(
        level=spec.get("log_level", "INFO"),
        format=f"%(asctime)s %(levelname)s %(name)s[{spec['index']}]: %(message)s",
    )
    for chatty in ("httpx", "aiobotocore", "botocore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
