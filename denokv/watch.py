"""In-process watch notifications: which subscribers care about which keys.

The writer thread calls `notify` after a COMMIT with the keys it touched; every
subscription watching one of them is woken on its own event loop. A woken
subscription re-reads its keys and decides whether anything really changed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Subscription:
    def __init__(self, hub: WatchHub, keys: tuple[bytes, ...], loop: asyncio.AbstractEventLoop):
        self.keys = keys
        self._hub = hub
        self._loop = loop
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until a watched key was touched; False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WatchHub:
    name = "watch"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[bytes, set[Subscription]] = {}
        # Told of every notification too (other server processes): keys, or None for all.
        self.listeners: list[Callable[[list[bytes] | None], None]] = []

    @property
    def open_subscriptions(self) -> int:
        with self._lock:
            return len({s for subs in self._by_key.values() for s in subs})

    def metrics(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "denokv_watch_streams_open", "Open watch streams", value=self.open_subscriptions
        )

    def problems(self) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        return {"watch_streams_open": self.open_subscriptions}

    def subscribe(self, keys: Iterable[bytes]) -> Subscription:
        sub = Subscription(self, tuple(keys), asyncio.get_running_loop())
        with self._lock:
            for key in sub.keys:
                self._by_key.setdefault(key, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            for key in sub.keys:
                subs = self._by_key.get(key)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._by_key[key]

    def notify(self, keys: Iterable[bytes]) -> None:
        """Wake the watchers of these keys, here and (listeners) elsewhere; any thread."""
        if self.listeners:
            keys = list(keys)
            for listener in self.listeners:
                listener(keys)
        self.notify_here(keys)

    def notify_here(self, keys: Iterable[bytes]) -> None:
        """Wake the watchers of these keys in this process only."""
        woken: dict[asyncio.AbstractEventLoop, set[Subscription]] = {}
        with self._lock:
            if not self._by_key:
                return
            for key in keys:
                for sub in self._by_key.get(key, ()):
                    woken.setdefault(sub._loop, set()).add(sub)
        for loop, subs in woken.items():
            try:
                loop.call_soon_threadsafe(_wake, subs)
            except RuntimeError:  # loop closed: its subscribers are gone
                pass

    def wake_all(self) -> None:
        """Wake every subscriber, e.g. so streams notice the engine is closing."""
        for listener in self.listeners:
            listener(None)
        with self._lock:
            keys = list(self._by_key)
        self.notify_here(keys)


def _wake(subs: set[Subscription]) -> None:
    for sub in subs:
        sub._event.set()
