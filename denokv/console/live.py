"""Live updates: a stream of the entries a page shows, sent again whenever one of them changes.

It rides on the engine's own watch machinery (the same subscriptions KV Connect
watch streams use): the stream sleeps until a commit touches one of its keys,
re-reads those keys and sends only the ones whose versionstamp moved. Nothing
polls the page. One JSON object per line; an empty line now and then keeps
proxies from closing an idle stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from denokv.console.data import entry_json, key_json
from denokv.engine_errors import EngineClosed

KEEPALIVE_S = 15.0
MAX_KEYS = 1000


async def entry_stream(
    engine: Any,
    keys: Sequence[bytes],
    stopping: Callable[[], bool],
    known: dict[bytes, bytes | None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """Lines of `{"entries": [...]}` for the keys whose versionstamp differs from `known`.

    Without `known` the first line holds every key; later lines hold only changes.
    """
    keys = list(dict.fromkeys(keys))
    subscription = engine.watch(keys)  # before the first read, so no commit slips between
    last: dict[bytes, bytes | None] = dict(known or {})
    try:
        while not (stopping() or engine.closed):
            changed = _changes(engine, keys, last)
            if changed:
                yield (json.dumps({"entries": changed}) + "\n").encode()
            while not await subscription.wait(KEEPALIVE_S):
                if stopping() or engine.closed:
                    return
                yield b"\n"
    except EngineClosed:
        return
    finally:
        subscription.close()


def _changes(
    engine: Any, keys: list[bytes], last: dict[bytes, bytes | None]
) -> list[dict[str, Any]]:
    entries = engine.get_entries(keys)
    moved = [
        (key, entry)
        for key, entry in zip(keys, entries, strict=True)
        if key not in last or last[key] != (entry.versionstamp if entry else None)
    ]
    if not moved:
        return []
    expiries = engine.expiry_times([key for key, entry in moved if entry is not None])
    out: list[dict[str, Any]] = []
    index = 0
    for key, entry in moved:
        last[key] = entry.versionstamp if entry else None
        if entry is None:
            out.append({"key": key_json(key), "absent": True})
        else:
            # A single watched key is shown whole; a page only needs its rows.
            out.append(entry_json(entry, expiries[index], full=len(keys) <= 10))
            index += 1
    return out
