"""Serving from several processes: reads on every core, writes still through one writer.

The main process is a whole server: the engine with its one writer (group
commit, one version order, acknowledgement after COMMIT), the expiry sweeper,
the shipper or follower, the console and the operations routes. Beside it run
`--processes - 1` worker processes. Each worker binds the same port
(SO_REUSEPORT; the kernel spreads connections over the processes) and serves
the KV Connect data path itself:

- **reads** from its own read connections to the same SQLite file (WAL lets
  any number of processes read beside the writer);
- **writes** (and a replica's strong reads) are passed whole to the main
  process over a Unix socket pair (`denokv.server.ipc`); the main process runs
  them exactly as if they had arrived there and sends the answer back;
- **watches** are served locally: the main process sends every commit's
  touched keys to every worker right after COMMIT, where they wake the local
  watchers, which then re-read from the file;
- **`/readyz` and `/healthz`** are answered by the worker itself from the
  main process's report (its readiness problems and fatal problem, sent every
  0.2 s), plus the worker's own state: a probe costs no hop, and a main
  process that stops reporting for `MAIN_SILENT_S` makes every worker unready
  instead of leaving probes waiting;
- every **other route** (`/metrics`, `/console/`) is relayed to the main
  process over a private Unix-socket listener, so each of them describes the
  whole server. Workers send their request counts to the main process every
  second; `/metrics` labels them by `process`.

A worker that dies is started again; a worker whose main process is gone
stops. On shutdown the workers stop first (their writes in flight still reach
the main process), then the main process finishes its own requests and
commits whatever is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from denokv.health import counters, gauges
from denokv.server import ipc
from denokv.server.pipeline import TEXT, error_reply

if TYPE_CHECKING:
    from denokv.server.app import KvServer

log = logging.getLogger("denokv.processes")

RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 15.0
READINESS_POLL_S = 0.2


def default_processes() -> int:
    """The CPUs this process may run on, at most 8 (one writer cannot feed more)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


@dataclass
class WorkerSpec:
    """What a worker needs to serve like the main process (sent on its stdin as JSON)."""

    sqlite_path: str
    host: str
    port: int
    relay_path: str  # the main process's private listener for the other routes
    config: dict[str, Any]  # ServerConfig fields that can be carried as JSON
    readers: int = 1
    log_level: str = "INFO"
    read_cache_bytes: int = 0  # the worker's read cache (`denokv.read_cache`); 0: none


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    ready: bool = False  # listening on the shared port


class WorkerHub:
    """The main process's side: starts the workers, runs their calls, tells them of commits."""

    name = "processes"

    def __init__(self, server: KvServer, count: int, spec: WorkerSpec) -> None:
        self.server = server
        self.count = count
        self.spec = spec
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0
        self.calls = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._not_ready: str | None = None

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.server.engine.watches.listeners.append(self._committed)
        for index in range(1, self.count):
            await self._spawn(index)
        self._keep(asyncio.create_task(self._watch_readiness()))

    async def _spawn(self, index: int) -> None:
        mine, theirs = socket.socketpair()
        spec = {**self.spec.__dict__, "index": index, "ipc_fd": theirs.fileno()}
        fds = [theirs.fileno()]
        counters = self.server.engine.write_counters
        if counters is not None and counters.fd >= 0:  # the writer's, for the worker's cache
            spec["counters_fd"] = counters.fd
            fds.append(counters.fd)
        proc = subprocess.Popen(
            [sys.executable, "-m", "denokv.server.worker"],
            stdin=subprocess.PIPE,
            pass_fds=fds,
            # Its own process group: Ctrl-C in a terminal reaches only this process,
            # which stops the workers itself (SIGTERM, in `stop`), even one that is
            # still starting. A worker also stops when this process goes away.
            process_group=0,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        worker = _Worker(index, proc, writer)
        self.workers[index] = worker
        worker.task = self._keep(asyncio.create_task(self._serve(worker, reader)))
        if self._not_ready:
            writer.write(ipc.frame(ipc.Kind.NOT_READY, 0, self._not_ready.encode()))
        writer.write(ipc.frame(ipc.Kind.HEALTH, 0, self._health()))
        log.info("started server process %d (pid %d)", index, proc.pid)

    async def stop(self) -> None:
        """Stop every worker (they finish their requests first), then forget them."""
        self._stopping = True
        with contextlib.suppress(ValueError):
            self.server.engine.watches.listeners.remove(self._committed)
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers.values():
            while worker.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if worker.proc.poll() is None:
                log.warning("server process %d did not stop in time; killing it", worker.index)
                worker.proc.kill()
                worker.proc.wait()
            worker.writer.close()
        for task in self._tasks:
            task.cancel()

    def signal_all(self, signum: int) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signum)

    def _keep(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- one worker ------------------------------------------------------------------------

    async def _serve(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            while (got := await ipc.read_frame(reader)) is not None:
                kind, ident, payload = got
                if kind is ipc.Kind.CALL:
                    self._keep(asyncio.create_task(self._call(worker, ident, payload)))
                elif kind is ipc.Kind.STATS:
                    self.server.metrics.workers[str(worker.index)] = json.loads(payload)
                elif kind is ipc.Kind.READY:
                    worker.ready = True
        except (ipc.FrameError, ConnectionError) as exc:
            # A worker told to stop may go with frames unread, and its socket resets.
            log.log(logging.DEBUG if self._stopping else logging.ERROR,
                    "server process %d: %s", worker.index, exc)  # fmt: skip
        if self._stopping:
            return
        code = worker.proc.poll()
        log.error("server process %d stopped (exit %s); starting it again", worker.index, code)
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()
        worker.proc.wait()
        await asyncio.sleep(RESTART_DELAY_S)
        if not self._stopping:
            self.restarts += 1
            await self._spawn(worker.index)

    async def _call(self, worker: _Worker, ident: int, payload: bytes) -> None:
        self.calls += 1
        unary = self.server.unary
        try:
            method, body = ipc.Method(payload[0]), payload[1:]
            if method is ipc.Method.ATOMIC_WRITE:
                status, ctype, answer = await unary.write_body(body)
            else:
                status, ctype, answer = await unary.forward_read_body(body)
        except Exception as exc:
            reply = error_reply(exc, "/v2/atomic_write (from a worker)")
            status, ctype, answer = reply if reply is not None else (500, TEXT, b"")
        with contextlib.suppress(ConnectionError, RuntimeError):
            worker.writer.write(
                ipc.frame(ipc.Kind.REPLY, ident, ipc.encode_reply(status, ctype, answer))
            )

    # -- news for every worker ------------------------------------------------------------

    def _committed(self, keys: list[bytes] | None) -> None:
        """A watch listener (any thread): keys touched by a commit, or None for everyone."""
        if self._loop is None or not self.workers:
            return
        if keys is None:
            message = ipc.frame(ipc.Kind.WAKE_ALL, 0)
        else:
            message = ipc.frame(ipc.Kind.TOUCHED, 0, ipc.encode_keys(keys))
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._send_all, message)

    def _send_all(self, message: bytes) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(ConnectionError, RuntimeError):
                worker.writer.write(message)

    async def _watch_readiness(self) -> None:
        """Tell the workers how the main process is, every READINESS_POLL_S.

        Two reports: why data calls must wait (a replica bootstrapping), sent
        when it changes; and the whole server's readiness problems and fatal
        problem, sent every time, so a worker answers `/readyz` and `/healthz`
        itself and can tell a main process that stopped reporting.
        """
        while not self._stopping:
            self._report_not_ready()
            self._send_all(ipc.frame(ipc.Kind.HEALTH, 0, self._health()))
            await asyncio.sleep(READINESS_POLL_S)

    def _report_not_ready(self) -> None:
        not_ready = self.server.config.not_ready
        if not_ready is None:
            return
        reason = not_ready() or ""
        if reason != (self._not_ready or ""):
            self._not_ready = reason or None
            self._send_all(ipc.frame(ipc.Kind.NOT_READY, 0, reason.encode()))

    def _health(self) -> bytes:
        return ipc.encode_health(self.server.problems(), self.server.fatal_problem())

    # -- health (a `denokv.health.Component`) ------------------------------------------

    def alive(self) -> int:
        """Workers running and listening on the shared port."""
        return sum(1 for w in self.workers.values() if w.ready and w.proc.poll() is None)

    def metrics(self) -> Iterator[Any]:
        running = 1 + self.alive()
        yield from gauges(
            ("denokv_server_processes", "Server processes running, the main one included", running)
        )
        yield from counters(
            ("denokv_server_process_restarts", "Worker processes started again", self.restarts),
            ("denokv_worker_calls", "Writes and forwarded reads run for workers", self.calls),
        )

    def problems(self) -> list[str]:
        return []  # a worker that died is started again; the others go on serving

    def status(self) -> dict[str, Any]:
        return {"processes": 1 + self.alive(), "process_restarts": self.restarts}
