"""Retention deletes the generations no point inside the window needs, and only those."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.backup_proofs import primary, restore, wait_shipped, workload
from tests.support.dbfile import kv_rows
from timemachine.retention import doomed_generations

DAY_MS = 86_400_000


def gen(ms: int) -> str:
    return f"{ms:013d}-abcd1234"


def test_keeps_the_generation_the_window_starts_in_and_everything_newer() -> None:
    now = 1_800_000_000_000
    names = [gen(now - d * DAY_MS) for d in (10, 8, 6, 1, 0)]
    doomed = doomed_generations(names, now, 7 * 86400, current=gen(now))
    # The window opens at now - 7d: points from then until now - 6d live in the
    # generation of now - 8d, so only the one of now - 10d can go.
    assert doomed == [gen(now - 10 * DAY_MS)]


def test_never_deletes_the_current_generation_or_foreign_folders() -> None:
    now = 1_800_000_000_000
    names = [gen(now - 30 * DAY_MS), gen(now - 20 * DAY_MS), "not-a-generation"]
    assert doomed_generations(names, now, 86400, current=gen(now - 30 * DAY_MS)) == []
    assert doomed_generations(names, now, 86400, current=None) == [gen(now - 30 * DAY_MS)]


@pytest.mark.s3
@pytest.mark.slow
def test_retention_on_a_running_primary(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket, "--s3-snapshot-interval", "1s",
                  "--s3-retention", "3s").start()  # fmt: skip
    points = []
    try:
        for phase in range(8):
            asyncio.run(workload(srv.url, srv.token, phase))
            time.sleep(0.1)
            points.append((time.time(), kv_rows(srv.db_path)))
            time.sleep(0.9)
        wait_shipped(srv.db_path)
        time.sleep(0.5)  # a few more sync passes apply retention
    finally:
        srv.stop()
        pass_time = time.time()

    def at(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

    # Points well inside the window are all restorable, exactly.
    kept = [(t, rows) for t, rows in points if t > pass_time - 2.5]
    assert kept
    for i, (t, rows) in enumerate(kept):
        done = restore(tmp_path, endpoint, bucket, at(t), f"kept-{i}.sqlite")
        assert done.returncode == 0, done.stderr
        assert kv_rows(tmp_path / f"kept-{i}.sqlite") == rows
    # The first point is long outside the window: its generation is gone.
    gone = restore(tmp_path, endpoint, bucket, at(points[0][0]), "gone.sqlite")
    assert gone.returncode == 1 and "before the oldest backup" in gone.stderr
