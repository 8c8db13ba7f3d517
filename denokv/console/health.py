"""The health page's figures: what each component says, and rates the console keeps itself.

Components (`denokv.health.Component`) expose counters and state in `status()`;
the console samples the counters about once a second into a small ring buffer
and turns them into per-second rates and the plots of the last minutes, so no
component has to keep history. The keys read are listed in README.md beside
this file. While no component reports `requests_total` the console counts the
data-path requests from the server's own request metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shlex
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from denokv import versionstamp as stamps

if TYPE_CHECKING:
    from denokv.console.host import ConsoleHost

log = logging.getLogger("denokv.console")

SAMPLE_S = 1.0
HISTORY = 600  # samples kept: ten minutes at one a second
RATES = {"commits": "commits_total", "requests": "requests_total"}
BACKUP_KEYS = ("last_upload_ms", "backlog_entries")
BACKUP_NAMES = ("shipper", "redo_log")
REPLICA_KEYS = ("lag_seconds", "applied_versionstamp")
REPLICA_NAMES = ("replica",)


class Sampler:
    """Counters sampled on the event loop; started by the first console request."""

    def __init__(self, server: ConsoleHost) -> None:
        self.server = server
        self.samples: deque[tuple[int, dict[str, float]]] = deque(maxlen=HISTORY)
        self.started_ms: int | None = None
        self._task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self.started_ms = self.started_ms or _now_ms()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        server = self.server
        while not (server.closing or server.engine.closed):
            try:
                self.sample()
            except Exception:  # a broken component must not stop the plots
                log.exception("sampling the health counters failed")
            await asyncio.sleep(SAMPLE_S)

    def sample(self, now_ms: int | None = None) -> None:
        self.samples.append((now_ms or _now_ms(), counters(self.server, statuses(self.server))))

    def rates(self) -> dict[str, dict[str, Any]]:
        """Per-second rate series of each counter, and the latest rate."""
        out: dict[str, dict[str, Any]] = {}
        points = list(self.samples)
        for name in RATES:
            series = []
            for (t0, a), (t1, b) in itertools.pairwise(points):
                if name in a and name in b and t1 > t0:
                    series.append([t1, max(0.0, (b[name] - a[name]) * 1000 / (t1 - t0))])
            out[name] = {"series": series, "now": series[-1][1] if series else None}
        return out


def statuses(server: ConsoleHost) -> list[tuple[str, dict[str, Any], list[str]]]:
    out = []
    for component in getattr(server, "components", []):
        try:
            out.append((component.name, dict(component.status()), list(component.problems())))
        except Exception as exc:
            out.append((component.name, {}, [f"status failed: {type(exc).__name__}: {exc}"]))
    return out


def counters(
    server: ConsoleHost, seen: list[tuple[str, dict[str, Any], list[str]]]
) -> dict[str, float]:
    found: dict[str, float] = {}
    for name, key in RATES.items():
        values = [s[key] for _, s, _ in seen if isinstance(s.get(key), int | float)]
        if values:
            found[name] = float(sum(values))
    if "requests" not in found:
        requests = _request_count(server)
        if requests is not None:
            found["requests"] = requests
    return found


def _request_count(server: ConsoleHost) -> float | None:
    metrics = getattr(server, "metrics", None)
    total = getattr(metrics, "requests_total", None)
    return None if total is None else float(total())


def role(server: ConsoleHost) -> str:
    if not server.config.accept_writes:
        return "replica"
    return "read-only" if server.engine.read_only else "primary"


def health(server: ConsoleHost, sampler: Sampler) -> dict[str, Any]:
    seen = statuses(server)
    backup = _merged(seen, BACKUP_KEYS, BACKUP_NAMES)
    replica = _merged(seen, REPLICA_KEYS, REPLICA_NAMES)
    located = backup or replica or {}
    points = located.get("recovery_points") or _current_generation(backup)
    return {
        "now_ms": _now_ms(),
        "role": _pick(seen, "role") or role(server),
        "data_version": _versionstamp_text(_pick(seen, "data_version")) or _data_version(server),
        "sampling_since_ms": sampler.started_ms,
        "rates": sampler.rates(),
        "backup": backup,
        "replica": replica,
        "recovery_points": points,
        "restore_command": restore_command(located) if points else None,
        "restore_location_known": bool(located.get("bucket")),
        "components": [{"name": n, "status": s, "problems": p} for n, s, p in seen],
    }


def _current_generation(backup: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The one recovery point a shipper's status always implies: its current generation."""
    if not backup or not backup.get("generation") or not backup.get("last_upload_ms"):
        return []
    through = backup.get("shipped_through")
    return [{
        "generation": backup["generation"],
        "from_ms": backup.get("generation_started_ms"),
        "to_ms": backup["last_upload_ms"],
        "from_versionstamp": None,
        "to_versionstamp": through[:20] if isinstance(through, str) else None,
    }]  # fmt: skip


def restore_command(location: dict[str, Any]) -> str:
    """`denokv pitr restore` for the backup this server ships or follows, without `--at`.

    Until the component reports where its backup lives, BUCKET and PREFIX stand in.
    """
    words = ["denokv", "--sqlite-path", "./restored.sqlite", "pitr", "restore"]
    words += ["--s3-bucket", str(location.get("bucket") or "BUCKET")]
    prefix = location.get("prefix")
    if prefix or not location.get("bucket"):
        words += ["--s3-prefix", str(prefix or "PREFIX")]
    if location.get("endpoint"):
        words += ["--s3-endpoint", str(location["endpoint"])]
    return " ".join(shlex.quote(w) for w in words)


def _merged(
    seen: list[tuple[str, dict[str, Any], list[str]]], keys: Iterable[str], names: Iterable[str]
) -> dict[str, Any] | None:
    """One view of the components that together describe the backup (or the replica)."""
    keys, names = tuple(keys), tuple(names)
    merged: dict[str, Any] = {}
    problems: list[str] = []
    found = False
    for name, status, component_problems in seen:
        if name in names or any(k in status for k in keys):
            found = True
            for k, v in status.items():
                merged.setdefault(k, v)
            problems += component_problems
    return {**merged, "problems": problems} if found else None


def _pick(seen: list[tuple[str, dict[str, Any], list[str]]], key: str) -> Any:
    for _, status, _ in seen:
        if status.get(key) is not None:
            return status[key]
    return None


def _versionstamp_text(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return stamps.from_version(value).hex()
    return value if isinstance(value, str) else None


def _data_version(server: ConsoleHost) -> str | None:
    with contextlib.suppress(Exception):
        return server.engine.current_versionstamp().hex()
    return None


def _now_ms() -> int:
    return int(time.time() * 1000)
