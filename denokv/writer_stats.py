"""The writer's counters, its storage-fault log, and what it reports as a `Component`.

The writer thread updates these as it works; `/metrics`, `/readyz` and the
console read them from other threads without touching the database.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from denokv.health import counters, gauges

log = logging.getLogger("denokv.writer")

GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class WriterStats:
    commits: int = 0  # SQLite commits of atomic writes (one per group)
    writes: int = 0  # atomic writes committed or refused
    sweeps: int = 0  # expiry sweep batches committed
    expired: int = 0  # keys those batches deleted
    jobs: int = 0  # other units of work committed
    queue_waiting: int = 0  # rows in `queue`
    queue_in_flight: int = 0  # rows in `queue_running`
    data_version: int = 0  # the version of the newest commit
    failures: dict[str, int] = field(default_factory=dict)  # failed units by cause
    group_sizes: list[int] = field(default_factory=lambda: [0] * (len(GROUP_BUCKETS) + 1))
    waited_s: float = 0.0  # summed over writes: from submit to the start of their group
    grouped_s: float = 0.0  # summed over groups: from begin to their answers going out

    def record_group(self, size: int, waited_s: float = 0.0, took_s: float = 0.0) -> None:
        self.commits += 1
        self.writes += size
        self.group_sizes[bisect.bisect_left(GROUP_BUCKETS, size)] += 1
        self.waited_s += waited_s
        self.grouped_s += took_s

    def record_failure(self, cause: str) -> None:
        self.failures[cause] = self.failures.get(cause, 0) + 1


class StorageFaults:
    """Which storage conditions are failing writes now, logged when they start and end."""

    def __init__(self) -> None:
        self.active: dict[str, tuple[float, int]] = {}  # kind -> (since, writes refused)

    def failing(self, kind: str, detail: str, refused: int) -> None:
        since, count = self.active.get(kind, (time.time(), 0))
        if kind not in self.active:
            log.error("writes are failing: %s (%s); answering 503 until it clears", kind, detail)
        self.active[kind] = (since, count + refused)

    def cleared(self) -> None:
        for kind, (since, count) in self.active.items():
            log.warning(
                "writes resumed after %s: %d refused over %.1f s", kind, count, time.time() - since
            )
        self.active.clear()


def writer_metrics(stats: WriterStats, faults: StorageFaults, alive: bool) -> Iterator[Any]:
    yield from counters(
        ("denokv_commits", "SQLite commits of writes", stats.commits),
        ("denokv_atomic_writes", "Atomic writes committed or refused", stats.writes),
        ("denokv_expiry_sweeps", "Expiry sweep batches committed", stats.sweeps),
        ("denokv_expired_keys", "Keys deleted by expiry sweeps", stats.expired),
        (
            "denokv_write_wait_seconds",
            "Time atomic writes waited for their commit group to begin, summed",
            stats.waited_s,
        ),
        (
            "denokv_commit_group_seconds",
            "Time commit groups took from begin to their answers, summed",
            stats.grouped_s,
        ),
    )
    yield from gauges(
        ("denokv_queue_depth", "Messages waiting in the queue", stats.queue_waiting),
        ("denokv_queue_in_flight", "Messages being delivered", stats.queue_in_flight),
        ("denokv_data_version", "Version of the newest commit", stats.data_version),
        ("denokv_writer_alive", "1 while the writer thread runs", 1 if alive else 0),
    )
    failures = CounterMetricFamily(
        "denokv_writer_failures", "Units of work rolled back, by cause", labels=["cause"]
    )
    for cause, count in sorted(stats.failures.items()):
        failures.add_metric([cause], count)
    yield failures
    failing = GaugeMetricFamily(
        "denokv_storage_fault", "1 while a storage condition fails writes", labels=["kind"]
    )
    for kind in sorted(faults.active):
        failing.add_metric([kind], 1)
    yield failing
    cumulative, buckets = 0, []
    for bound, count in zip(GROUP_BUCKETS, stats.group_sizes, strict=False):
        cumulative += count
        buckets.append((str(bound), cumulative))
    buckets.append(("+Inf", cumulative + stats.group_sizes[-1]))
    yield HistogramMetricFamily(
        "denokv_group_commit_size",
        "Writes per SQLite commit",
        buckets=buckets,
        sum_value=stats.writes,
    )
