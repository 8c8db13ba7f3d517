"""Operations endpoints: `/healthz`, `/readyz` and Prometheus `/metrics`.

None of them needs the access token and none reveals data: only counts,
timings and versionstamps. Request counters are kept as requests finish;
everything else is read from the engine, writer, shipper and replica when
`/metrics` is scraped, so the hot path pays nothing for it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from denokv.engine import Engine
from denokv.writer import GROUP_BUCKETS

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass
class Readiness:
    """Extra conditions for `/readyz`; each returns None when fine, else the reason."""

    checks: list[Callable[[], str | None]] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [p for p in (check() for check in self.checks) if p]


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "denokv_requests", "HTTP requests by endpoint and status",
            ["endpoint", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "denokv_request_duration_seconds", "Request latency by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.state = _StateCollector(engine)
        self.registry.register(self.state)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shipper_stats: Any = None
        self.replica_stats: Any = None

    def collect(self) -> Iterator[Any]:
        engine = self.engine
        yield GaugeMetricFamily(
            "denokv_watch_streams_open", "Open watch streams",
            value=engine.watches.open_subscriptions,
        )  # fmt: skip
        writer = engine.writer
        if writer is not None:
            yield CounterMetricFamily("denokv_commits", "SQLite commits of writes",
                                      value=writer.stats_commits)
            yield CounterMetricFamily("denokv_atomic_writes", "Atomic writes committed or refused",
                                      value=writer.stats_writes)
            yield CounterMetricFamily("denokv_expiry_sweeps", "Expiry sweeps run",
                                      value=writer.stats_sweeps)
            yield CounterMetricFamily("denokv_expired_keys", "Keys deleted by expiry sweeps",
                                      value=writer.stats_expired)  # fmt: skip
            cumulative, buckets = 0, []
            for bound, count in zip(GROUP_BUCKETS, writer.stats_group_sizes, strict=False):
                cumulative += count
                buckets.append((str(bound), cumulative))
            cumulative += writer.stats_group_sizes[-1]
            buckets.append(("+Inf", cumulative))
            yield HistogramMetricFamily(
                "denokv_group_commit_size", "Writes per SQLite commit",
                buckets=buckets, sum_value=writer.stats_writes,
            )  # fmt: skip
        yield from self._database_gauges()
        if self.shipper_stats is not None:
            yield from _shipper_metrics(self.shipper_stats)
        if self.replica_stats is not None:
            yield from self.replica_stats.metrics()

    def _database_gauges(self) -> Iterator[Any]:
        if self.engine.closed:
            return
        try:
            with self.engine.reader() as conn:
                queued = conn.execute("select count(*) from queue").fetchone()[0]
                backlog = _redo_backlog(conn)
        except sqlite3.Error:
            return
        yield GaugeMetricFamily("denokv_queue_depth", "Messages waiting in the queue",
                                value=queued)  # fmt: skip
        if backlog is not None:
            entries, size, oldest = backlog
            yield GaugeMetricFamily("denokv_redo_backlog_entries",
                                    "Redo entries not yet shipped", value=entries)
            yield GaugeMetricFamily("denokv_redo_backlog_bytes",
                                    "Approximate size of the unshipped redo log", value=size)
            age = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
            yield GaugeMetricFamily(
                "denokv_redo_backlog_oldest_seconds", "Age of the oldest unshipped redo entry",
                value=age,
            )


def _redo_backlog(conn: sqlite3.Connection) -> tuple[int, int, int | None] | None:
    from denokv import redo_log

    try:
        return redo_log.backlog(conn)
    except sqlite3.OperationalError:  # no redo log: backups are off
        return None


def _shipper_metrics(stats: Any) -> Iterator[Any]:
    yield CounterMetricFamily("denokv_s3_segments_shipped", "Log segments uploaded",
                              value=stats.segments)
    yield CounterMetricFamily("denokv_s3_bytes_shipped", "Bytes of log segments uploaded",
                              value=stats.bytes)
    yield CounterMetricFamily("denokv_s3_errors", "Failed shipping attempts", value=stats.errors)
    yield CounterMetricFamily("denokv_s3_generations", "Backup generations started",
                              value=stats.generations)
    if stats.last_success is not None:
        yield GaugeMetricFamily(
            "denokv_s3_last_success_timestamp_seconds", "When shipping last succeeded",
            value=stats.last_success,
        )


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def readyz_handler(engine: Engine, readiness: Readiness, closing: Callable[[], bool]):  # type: ignore[no-untyped-def]
    async def readyz(request: Request) -> Response:
        problems = []
        if closing():
            problems.append("shutting down")
        if engine.closed:
            problems.append("database closed")
        problems += readiness.problems()
        if problems:
            return PlainTextResponse("not ready: " + "; ".join(problems), 503)
        return PlainTextResponse("ready")

    return readyz


def metrics_handler(metrics: Metrics):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return endpoint
