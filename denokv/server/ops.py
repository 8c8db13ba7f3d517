"""Operations endpoints: `/healthz`, `/readyz` and Prometheus `/metrics`.

None of them needs the access token and none reveals data: only counts,
timings and versionstamps. The server keeps only the request counters; every
other figure and every readiness condition comes from the components
(`denokv.health.Component`: writer, redo log, shipper, follower, ...), which
keep their own counters as they work, so serving these endpoints never scans a
table or waits on the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from denokv.health import Component

log = logging.getLogger("denokv.server")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self, components: list[Component]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "denokv_requests", "HTTP requests by endpoint and status",
            ["endpoint", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "denokv_request_duration_seconds", "Request latency by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_ComponentCollector(components))

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ComponentCollector(Collector):
    """Asks each component for its metric families at scrape time."""

    def __init__(self, components: list[Component]) -> None:
        self.components = components  # the server's list: components added later count too

    def collect(self) -> Iterator[Any]:
        for component in list(self.components):
            try:
                yield from component.metrics()
            except Exception:  # one broken component must not hide the others
                log.exception("metrics of %s failed", component.name)


def problems(components: list[Component]) -> list[str]:
    """Every component's reasons not to be ready."""
    found = []
    for component in list(components):
        try:
            found += component.problems()
        except Exception as exc:
            found.append(f"{component.name}: cannot tell ({type(exc).__name__}: {exc})")
    return found


def healthz_handler(fatal: Callable[[], str | None]):  # type: ignore[no-untyped-def]
    """Alive unless the process can no longer do its job (then a restart is the cure)."""

    async def healthz(request: Request) -> Response:
        reason = fatal()
        if reason:
            return PlainTextResponse(f"unhealthy: {reason}", 503)
        return PlainTextResponse("ok")

    return healthz


def readyz_handler(reasons: Callable[[], list[str]]):  # type: ignore[no-untyped-def]
    async def readyz(request: Request) -> Response:
        found = reasons()
        if found:
            return PlainTextResponse("not ready: " + "; ".join(found), 503)
        return PlainTextResponse("ready")

    return readyz


def metrics_handler(metrics: Metrics):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return endpoint
