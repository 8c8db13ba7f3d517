"""What the client needs from a database: the interface both backends implement.

`EmbeddedBackend` runs the engine in this process (file or `:memory:`);
`RemoteBackend` speaks KV Connect to a server. Both take and return the
engine's own operation types, so `Kv` does not care which one it talks to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from denokv.operations import AtomicWrite, Entry, ReadRange, WriteResult

Consistency = Literal["strong", "eventual"]


@dataclass(frozen=True, slots=True)
class QueueMessage:
    id: str
    payload: bytes


class Backend(Protocol):
    async def snapshot_read(
        self, ranges: Sequence[ReadRange], consistency: Consistency
    ) -> list[list[Entry]]: ...

    async def atomic_write(self, write: AtomicWrite) -> WriteResult: ...

    def watch(self, keys: Sequence[bytes]) -> AsyncIterator[list[Entry | None]]:
        """Yield the current entries at once, then again after each real change."""
        ...

    async def listen_queue(self, handler: Callable[[bytes], Awaitable[None]]) -> None: ...

    async def close(self) -> None: ...
