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
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from denokv import read_cache
from denokv.health import Component
from denokv.read_cache import ReadCache
from denokv.server import request_stats
from denokv.server.request_stats import RequestStats, Snapshot

log = logging.getLogger("denokv.server")


class Metrics:
    """The server's metrics: its components', and the requests of every server process.

    `observe` counts a finished request of this process; `workers` holds the
    latest snapshot each worker process sent (see `denokv.server.processes`).
    """

    def __init__(
        self, components: list[Component], process: str = "0", cache: ReadCache | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestStats()
        self.process = process
        self.cache = cache
        self.workers: dict[str, Snapshot] = {}
        self.observe = self.requests.observe
        self.registry.register(_ComponentCollector(components))
        self.registry.register(_RequestCollector(self))

    def snapshot(self) -> Snapshot:
        """This process's figures: its requests, and its read cache's."""
        snap = self.requests.snapshot()
        if self.cache is not None:
            snap["read_cache"] = self.cache.figures()
        return snap

    def snapshots(self) -> dict[str, Snapshot]:
        return {self.process: self.snapshot(), **self.workers}

    def requests_total(self) -> int:
        return request_stats.total(self.snapshots())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RequestCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        snapshots = self.metrics.snapshots()
        yield from request_stats.families(snapshots)
        yield from read_cache.families(snapshots)


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


Handler = Callable[[Request], Awaitable[Response]]


def healthz_handler(fatal: Callable[[], str | None]) -> Handler:
    """Alive unless the process can no longer do its job (then a restart is the cure)."""

    async def healthz(request: Request) -> Response:
        reason = fatal()
        if reason:
            return PlainTextResponse(f"unhealthy: {reason}", 503)
        return PlainTextResponse("ok")

    return healthz


def readyz_handler(reasons: Callable[[], list[str]]) -> Handler:
    async def readyz(request: Request) -> Response:
        found = reasons()
        if found:
            return PlainTextResponse("not ready: " + "; ".join(found), 503)
        return PlainTextResponse("ready")

    return readyz


def metrics_handler(metrics: Metrics) -> Handler:
    async def endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return endpoint
