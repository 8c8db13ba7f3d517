"""The Python client: `open_kv` for a URL (KV Connect), a file path or `:memory:`.

The names below are imported on first use (as in `denokv`), so importing one module of
the package (`denokv.client.errors`, which the shared value codec raises) does not load
the client's HTTP stack, nor the codec itself.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from denokv.client.kv import COMMIT_VERSIONSTAMP, AtomicOperation, CommitResult, Kv, KvEntry
    from denokv.client.remote import RetryPolicy
    from denokv.client.sync import SyncKv

_EXPORTS = {
    "COMMIT_VERSIONSTAMP": "denokv.client.kv",
    "AtomicOperation": "denokv.client.kv",
    "CommitResult": "denokv.client.kv",
    "Kv": "denokv.client.kv",
    "KvEntry": "denokv.client.kv",
    "RetryPolicy": "denokv.client.remote",
    "SyncKv": "denokv.client.sync",
}


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
    from denokv.client.kv import Kv

    target = str(path_or_url)
    if target.startswith(("http://", "https://")):
        from denokv.client.remote import RemoteBackend

        return Kv(RemoteBackend(target, access_token, retry=retry, http2=http2))
    from denokv.client.embedded import EmbeddedBackend

    return Kv(EmbeddedBackend(target, **engine_options))


def open_kv_sync(path_or_url: str | Path = ":memory:", **options: Any) -> SyncKv:
    """`open_kv` for code without an event loop: every method blocks until done."""
    from denokv.client.sync import SyncKv

    return SyncKv(lambda: open_kv(path_or_url, **options))


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'denokv.client' has no attribute {name!r}")
    return getattr(import_module(module), name)


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
