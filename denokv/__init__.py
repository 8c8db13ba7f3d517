"""Self-hosted Deno KV: the engine, the KV Connect server and the Python client.

    import denokv

    async with denokv.open_kv("http://localhost:4512", access_token="...") as kv:
        await kv.set(["users", "ada"], {"name": "Ada"})
        entry = await kv.get(["users", "ada"])

The client names below are imported on first use, so the server (which shares
this package) does not load the client's HTTP stack and value codec.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from denokv.client import (
        COMMIT_VERSIONSTAMP,
        AtomicOperation,
        CommitResult,
        Kv,
        KvEntry,
        RetryPolicy,
        SyncKv,
        open_kv,
        open_kv_sync,
    )
    from denokv.keys import KvInt, KvNumber
    from denokv.values import KvU64

_EXPORTS = {
    "COMMIT_VERSIONSTAMP": "denokv.client",
    "AtomicOperation": "denokv.client",
    "CommitResult": "denokv.client",
    "Kv": "denokv.client",
    "KvEntry": "denokv.client",
    "RetryPolicy": "denokv.client",
    "SyncKv": "denokv.client",
    "open_kv": "denokv.client",
    "open_kv_sync": "denokv.client",
    "KvInt": "denokv.keys",
    "KvNumber": "denokv.keys",
    "KvU64": "denokv.values",
}

__all__ = [
    "COMMIT_VERSIONSTAMP",
    "AtomicOperation",
    "CommitResult",
    "Kv",
    "KvEntry",
    "KvInt",
    "KvNumber",
    "KvU64",
    "RetryPolicy",
    "SyncKv",
    "open_kv",
    "open_kv_sync",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'denokv' has no attribute {name!r}")
    return getattr(import_module(module), name)
