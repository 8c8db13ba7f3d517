"""The object store interface every backup destination implements (S3 is one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class ObjectNotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float  # seconds since the epoch


class ObjectStore(Protocol):
    async def put(self, key: str, body: bytes, *, if_absent: bool = False) -> bool:
        """Store `body`. With `if_absent`, never replace an existing object and return
        False when one was there (on stores that enforce it)."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's body; ObjectNotFound if there is none."""
        ...

    async def list(self, prefix: str, start_after: str | None = None) -> list[ObjectInfo]:
        """Every object under `prefix` in key order, after `start_after` if given."""
        ...

    async def list_folders(self, prefix: str) -> list[str]:
        """The next path segment of every key under `prefix` ("a/" for "prefix/a/x")."""
        ...

    async def delete(self, keys: Sequence[str]) -> None: ...

    async def close(self) -> None: ...
