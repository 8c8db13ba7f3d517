"""What the server says of itself over a benchmark window, read from its `/metrics`.

The client's latency of a call includes the network, the HTTP front's queues
and the client's own CPU; the server's request histogram covers only the time
from the handler's start to its answer. Taking both over the same window
shows where a call's time goes. Worker processes report to the main process
once a second, so their share of a window is off by up to a second.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

_TOTALS = (
    "denokv_read_cache_hits_total",
    "denokv_read_cache_misses_total",
    "denokv_write_wait_seconds_total",
    "denokv_commit_group_seconds_total",
    "denokv_atomic_writes_total",
    "denokv_commits_total",
)
_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


def scrape(url: str) -> dict[str, float]:
    """{endpoint or metric: total} of the figures compared below, over all processes."""
    text = httpx.get(url + "/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found is None:
            continue
        name, labels, value = found.group(1), found.group(2) or "", float(found.group(3))
        if name in ("denokv_request_duration_seconds_sum", "denokv_request_duration_seconds_count"):
            endpoint = re.search(r'endpoint="([^"]+)"', labels)
            if endpoint is not None:
                key = f"{endpoint.group(1)}:{name.rsplit('_', 1)[1]}"
                totals[key] = totals.get(key, 0.0) + value
        elif name in _TOTALS:
            totals[name] = totals.get(name, 0.0) + value
    return totals


def window(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Between two scrapes: the mean handler time (ms) of snapshot_read and atomic_write,
    how long a write waited for its commit group to begin and how long a group took (ms),
    and the read cache's share of hits."""

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    out: dict[str, Any] = {}
    for endpoint in ("snapshot_read", "atomic_write"):
        count = delta(f"{endpoint}:count")
        out[f"server_{endpoint}_ms"] = 1000 * delta(f"{endpoint}:sum") / count if count else None
    writes, groups = delta("denokv_atomic_writes_total"), delta("denokv_commits_total")
    wait = delta("denokv_write_wait_seconds_total")
    out["writer_wait_ms"] = 1000 * wait / writes if writes else None
    group = delta("denokv_commit_group_seconds_total")
    out["writer_group_ms"] = 1000 * group / groups if groups else None
    hits, misses = delta("denokv_read_cache_hits_total"), delta("denokv_read_cache_misses_total")
    out["read_cache_hit_share"] = hits / (hits + misses) if hits + misses else None
    return out
