"""Self-hosted Deno KV: the engine, the KV Connect server and the Python client.

    import denokv

    async with denokv.open_kv("http://localhost:4512", access_token="...") as kv:
        await kv.set(["users", "ada"], {"name": "Ada"})
        entry = await kv.get(["users", "ada"])
"""

from __future__ import annotations

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
