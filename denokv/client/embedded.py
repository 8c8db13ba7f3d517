"""The client's in-process backend: the server's own engine, no HTTP in between."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from denokv import queue
from denokv.client.backend import Consistency
from denokv.client.errors import KvUnavailableError, KvValidationError
from denokv.engine import Engine
from denokv.engine_errors import EngineUnavailable, WriteError
from denokv.operations import AtomicWrite, Entry, ReadRange, WriteResult
from denokv.writer import now_ms

log = logging.getLogger("denokv.queue")

MAX_IDLE_WAIT_S = 1.0  # re-check for due messages at least this often
LEASE_RENEW_S = queue.LEASE_MS / 1000 / 2.5
MAX_CONCURRENT_DELIVERIES = 10


class EmbeddedBackend:
    def __init__(self, path: str | Path, **engine_options: Any) -> None:
        self.engine = Engine(path, **engine_options)
        self._wakeups: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        if self.engine.writer is not None:
            self.engine.writer.on_enqueued = self._wake_listeners

    async def snapshot_read(
        self, ranges: Sequence[ReadRange], consistency: Consistency
    ) -> list[list[Entry]]:
        return await self.engine.snapshot_read(ranges)

    async def atomic_write(self, write: AtomicWrite) -> WriteResult:
        try:
            return await self.engine.atomic_write(write)
        except WriteError as exc:
            raise KvValidationError(str(exc)) from None
        except EngineUnavailable as exc:
            raise KvUnavailableError(str(exc)) from None

    async def watch(self, keys: Sequence[bytes]) -> AsyncIterator[list[Entry | None]]:
        with self.engine.watch(keys) as subscription:
            yield self.engine.get_entries(keys)
            while not self.engine.closed:
                await subscription.wait()
                if self.engine.closed:
                    return
                yield self.engine.get_entries(keys)

    # -- queues -------------------------------------------------------------------

    async def listen_queue(self, handler: Callable[[bytes], Awaitable[None]]) -> None:
        writer = self.engine.writer
        if writer is None:
            raise RuntimeError("queues need a writable database")
        loop = asyncio.get_running_loop()
        wakeup = asyncio.Event()
        token = (loop, wakeup)
        self._wakeups.add(token)
        slots = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)
        tasks: set[asyncio.Task[None]] = set()
        try:
            await self.engine.run(queue.recover_lost, name="queue recovery")
            while not self.engine.closed:
                await slots.acquire()
                delivery = await self.engine.run(queue.dequeue, name="dequeue")
                if delivery is None:
                    slots.release()
                    await self._idle(wakeup)
                    continue
                task = asyncio.create_task(self._deliver(delivery, handler, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            self._wakeups.discard(token)
            for task in tasks:
                task.cancel()

    async def _idle(self, wakeup: asyncio.Event) -> None:
        due = await self.engine.run(queue.next_due, name="queue check")
        wait = MAX_IDLE_WAIT_S
        if due is not None:
            wait = min(wait, max(0.0, (due - now_ms()) / 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), wait)
        wakeup.clear()
        # Leases of crashed deliveries run out while we wait; pick those up too.
        await self.engine.run(queue.recover_lost, name="queue recovery")

    async def _deliver(
        self,
        delivery: queue.Delivery,
        handler: Callable[[bytes], Awaitable[None]],
        slots: asyncio.Semaphore,
    ) -> None:
        renew = asyncio.create_task(self._keep_leased(delivery.id))
        try:
            try:
                await handler(delivery.payload)
                success = True
            except Exception:
                log.exception("queue handler failed; the message will be retried")
                success = False
            finally:
                renew.cancel()
            await self.engine.run(
                lambda tx: queue.settle(tx, delivery.id, success), name="queue settle"
            )
        finally:
            slots.release()

    async def _keep_leased(self, msg_id: str) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            await self.engine.run(lambda tx: queue.extend_lease(tx, msg_id), name="queue lease")

    def _wake_listeners(self) -> None:
        for loop, event in list(self._wakeups):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def close(self) -> None:
        self._wake_listeners()
        await asyncio.to_thread(self.engine.close)
