"""Requests counted by endpoint and status, with a latency histogram per endpoint.

Plain dictionaries rather than prometheus_client's metric objects: counting a
request is two dictionary updates on the hot path, and the counts of every
server process can be shipped as one small snapshot to the main process, which
serves them all on `/metrics` (with a `process` label).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

Snapshot = dict[str, Any]  # {"requests": [[endpoint, status, n], ...], "latency": {...}}


class RequestStats:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        # endpoint -> [count per bucket (the last is +Inf), sum of seconds]
        self._latency: dict[str, list[Any]] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        hist = self._latency.get(endpoint)
        if hist is None:
            hist = self._latency[endpoint] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0]
        hist[0][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[1] += seconds

    def total(self) -> int:
        return sum(self._counts.values())

    def snapshot(self) -> Snapshot:
        return {
            "requests": [[e, s, n] for (e, s), n in self._counts.items()],
            "latency": {e: [list(h[0]), h[1]] for e, h in self._latency.items()},
        }


def families(by_process: Mapping[str, Snapshot]) -> Iterator[Any]:
    """The request metrics of every process, each sample labelled with its process."""
    requests = CounterMetricFamily(
        "denokv_requests",
        "HTTP requests by endpoint and status",
        labels=["endpoint", "status", "process"],
    )
    latency = HistogramMetricFamily(
        "denokv_request_duration_seconds", "Request latency by endpoint",
        labels=["endpoint", "process"],
    )  # fmt: skip
    for process, snap in sorted(by_process.items()):
        for endpoint, status, n in snap.get("requests", ()):
            requests.add_metric([endpoint, str(status), process], n)
        for endpoint, (counts, seconds) in snap.get("latency", {}).items():
            cumulative, buckets = 0, []
            for bound, count in zip(LATENCY_BUCKETS, counts, strict=False):
                cumulative += count
                buckets.append((str(bound), cumulative))
            buckets.append(("+Inf", cumulative + counts[-1]))
            latency.add_metric([endpoint, process], buckets, seconds)
    yield requests
    yield latency


def total(by_process: Mapping[str, Snapshot]) -> int:
    return sum(n for snap in by_process.values() for _, _, n in snap.get("requests", ()))
