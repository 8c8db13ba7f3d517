"""The Python client: `open_kv` for a URL (KV Connect), a file path or `:memory:`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from denokv.client.kv import COMMIT_VERSIONSTAMP, AtomicOperation, CommitResult, Kv, KvEntry
from denokv.client.remote import RetryPolicy
from denokv.client.sync import SyncKv


def open_kv(
    path_or_url: str | Path = ":memory:",
    *,
    access_token: str | None = None,
    retry: RetryPolicy | None = None,
    http2: bool = False,
    **engine_options: Any,
) -> Kv:
    """Open a database. `http(s)://` URLs use KV Connect; anything else is a local file.

    For a URL the token comes from `access_token` or `DENO_KV_ACCESS_TOKEN`;
    `http2=True` speaks HTTP/2 instead of HTTP/1.1 (slower here, for HTTP/2-only proxies).
    Local files use the same engine as the server (options such as
    `synchronous="normal"` are passed to it) and support `listen_queue`.
    """
    target = str(path_or_url)
    if target.startswith(("http://", "https://")):
        from denokv.client.remote import RemoteBackend

        return Kv(RemoteBackend(target, access_token, retry=retry, http2=http2))
    from denokv.client.embedded import EmbeddedBackend

    return Kv(EmbeddedBackend(target, **engine_options))


def open_kv_sync(path_or_url: str | Path = ":memory:", **options: Any) -> SyncKv:
    """`open_kv` for code without an event loop: every method blocks until done."""
    return SyncKv(lambda: open_kv(path_or_url, **options))


__all__ = [
    "COMMIT_VERSIONSTAMP",
    "AtomicOperation",
    "CommitResult",
    "Kv",
    "KvEntry",
    "RetryPolicy",
    "SyncKv",
    "open_kv",
    "open_kv_sync",
]
