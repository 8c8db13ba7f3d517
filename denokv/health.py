"""What a running component (writer, shipper, follower, ...) tells the server about itself.

Each component keeps its own counters as it works and answers from them, so
serving `/metrics`, `/readyz` or the console's health page never scans a table
or waits on the database. The server only collects what its components say:
it does not know their fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    """A part of the server that reports metrics, readiness and status."""

    name: str  # "writer", "shipper", "replica", ...

    def metrics(self) -> Iterable[Any]:
        """Prometheus metric families (prometheus_client.core.*MetricFamily)."""
        ...

    def problems(self) -> list[str]:
        """Why the server should not be called ready; empty when all is well."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-serialisable figures for people (the console's health page)."""
        ...


# One figure under one name: most of what components report. Each row is
# (metric name, help text, value).
Figure = tuple[str, str, float]


def counters(*rows: Figure) -> Iterator[Any]:
    """An unlabelled Prometheus counter for each row."""
    from prometheus_client.core import CounterMetricFamily

    for name, text, value in rows:
        yield CounterMetricFamily(name, text, value=value)


def gauges(*rows: Figure) -> Iterator[Any]:
    """An unlabelled Prometheus gauge for each row."""
    from prometheus_client.core import GaugeMetricFamily

    for name, text, value in rows:
        yield GaugeMetricFamily(name, text, value=value)
