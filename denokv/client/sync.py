"""A blocking facade over `Kv` for scripts: same methods, no `await`.

A private event loop runs in a daemon thread; each call is handed to it and
waited for.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Sequence
from typing import Any, TypeVar

from denokv.client.errors import KvClosedError
from denokv.client.kv import (
    AtomicOperation,
    CommitResult,
    Kv,
    KvEntry,
    ListIterator,
    SetKey,
    _CommitVersionstamp,
)
from denokv.keys import Key

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopped = False
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="denokv-sync", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.stopped:  # the database was closed: say so, as the async client does
            coro.close()
            raise KvClosedError()
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class SyncKv:
    def __init__(self, make_kv: Callable[[], Kv]) -> None:
        self._runner = _LoopThread()

        async def build() -> Kv:
            return make_kv()

        self._kv: Kv = self._runner.run(build())

    def get(self, key: Key, **kw: Any) -> KvEntry:
        return self._runner.run(self._kv.get(key, **kw))

    def get_many(self, keys: Sequence[Key], **kw: Any) -> list[KvEntry]:
        return self._runner.run(self._kv.get_many(keys, **kw))

    def list(self, prefix: Key | None = None, **kw: Any) -> SyncListIterator:
        return SyncListIterator(self._runner, self._kv.list(prefix, **kw))

    def set(self, key: SetKey, value: Any, **kw: Any) -> CommitResult:
        return self._runner.run(self._kv.set(key, value, **kw))

    def delete(self, key: Key) -> None:
        self._runner.run(self._kv.delete(key))

    def atomic(self) -> SyncAtomicOperation:
        return SyncAtomicOperation(self._runner, self._kv.atomic())

    def commit_versionstamp(self) -> _CommitVersionstamp:
        return self._kv.commit_versionstamp()

    def enqueue(self, value: Any, **kw: Any) -> CommitResult:
        return self._runner.run(self._kv.enqueue(value, **kw))

    def watch(self, keys: Sequence[Key]) -> Generator[builtins.list[KvEntry], None, None]:
        return _blocking_iter(self._runner, self._kv.watch(keys))

    def listen_queue(self, handler: Any) -> None:
        self._runner.run(self._kv.listen_queue(handler))

    def close(self) -> None:
        """Close the database and stop its loop; closing again does nothing."""
        if self._runner.stopped:
            return
        self._runner.run(self._kv.close())
        self._runner.stop()

    def __enter__(self) -> SyncKv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncListIterator:
    def __init__(self, runner: _LoopThread, inner: ListIterator) -> None:
        self._runner = runner
        self._inner = inner

    @property
    def cursor(self) -> str:
        return self._inner.cursor

    def __iter__(self) -> SyncListIterator:
        return self

    def __next__(self) -> KvEntry:
        try:
            return self._runner.run(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None


class SyncAtomicOperation:
    def __init__(self, runner: _LoopThread, inner: AtomicOperation) -> None:
        self._runner = runner
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def chained(*args: Any, **kw: Any) -> Any:
            result = method(*args, **kw)
            return self if result is self._inner else result

        return chained

    def commit(self) -> CommitResult:
        return self._runner.run(self._inner.commit())


def _blocking_iter(runner: _LoopThread, agen: AsyncGenerator[T, None]) -> Generator[T, None, None]:
    try:
        while True:
            try:
                yield runner.run(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        runner.run(agen.aclose())
