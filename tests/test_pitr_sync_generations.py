"""`pitr sync` follows the primary into the generations it rotates to (issue 10, item 7).

Before lineage, a replica file synced once stayed on the generation it was
bootstrapped from: after the primary rotated, `pitr sync` fetched nothing new,
said "Synced", and every commit of the new generation was missing from
`pitr list` and out of reach of `pitr checkout`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.backup_proofs import (
    PREFIX,
    complete_generations,
    primary,
    run_cli,
    wait_shipped,
    write_phase,
)
from tests.support.dbfile import kv_rows, point_of
from tests.support.s3 import s3_args
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.s3, pytest.mark.slow]

ROTATE_EVERY = "8s"  # long enough for a write, a shipment and a `pitr sync` in between


def pitr(db: Path, *args: str, s3: tuple[str, str] | None = None) -> str:
    extra = s3_args(*s3, PREFIX) if s3 else []
    done = run_cli(db, "pitr", *args, *extra)
    assert done.returncode == 0, f"pitr {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def listed_points(db: Path) -> list[str]:
    return [line.split("\t")[0] for line in pitr(db, "list").strip().splitlines()]


def test_pitr_sync_moves_into_the_generation_after_a_rotation(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket, "--s3-snapshot-interval", ROTATE_EVERY).start()
    replica_file = tmp_path / "tt.sqlite"
    try:
        wait_until(lambda: len(complete_generations(endpoint, bucket)) == 1, 30, "a generation")
        write_phase(srv, 0)
        wait_shipped(srv.db_path)
        first = (point_of(srv.db_path), kv_rows(srv.db_path))
        pitr(replica_file, "sync", s3=s3_bucket)
        assert first[0] in listed_points(replica_file)

        # The primary rotates; the next commits live in the new generation only.
        wait_until(lambda: len(complete_generations(endpoint, bucket)) >= 2, 30, "a rotation")
        write_phase(srv, 1)
        wait_shipped(srv.db_path)
        second = (point_of(srv.db_path), kv_rows(srv.db_path))
        generations = complete_generations(endpoint, bucket)
        pitr(replica_file, "sync", s3=s3_bucket)
    finally:
        assert srv.stop() == 0
    assert len(generations) == 2, f"the primary rotated more than once: {generations}"
    points = listed_points(replica_file)
    assert first[0] in points and second[0] in points, (first[0], second[0], points)
    for stamp, expected in (second, first, second):
        moved = pitr(replica_file, "checkout", stamp)
        assert moved.strip() == f"Snapshot is now at versionstamp {stamp}"
        assert kv_rows(replica_file) == expected


def test_pitr_sync_walks_every_generation_rotated_to_since_the_last_sync(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket, "--s3-snapshot-interval", "2s").start()
    replica_file = tmp_path / "tt.sqlite"
    try:
        wait_until(lambda: len(complete_generations(endpoint, bucket)) == 1, 30, "a generation")
        write_phase(srv, 0)
        wait_shipped(srv.db_path)
        first = (point_of(srv.db_path), kv_rows(srv.db_path))
        pitr(replica_file, "sync", s3=s3_bucket)
        synced = (pitr(replica_file, "info"), kv_rows(replica_file))
        seen = len(complete_generations(endpoint, bucket))
        wait_until(lambda: len(complete_generations(endpoint, bucket)) >= seen + 2, 30,
                   "two rotations")  # fmt: skip
        write_phase(srv, 1)
        wait_shipped(srv.db_path)
        second = (point_of(srv.db_path), kv_rows(srv.db_path))
        pitr(replica_file, "sync", s3=s3_bucket)
    finally:
        assert srv.stop() == 0
    # Sync fetches; it does not move what the file serves.
    assert (pitr(replica_file, "info"), kv_rows(replica_file)) == synced
    points = listed_points(replica_file)
    assert first[0] in points and second[0] in points, (first[0], second[0], points)
    for stamp, expected in (second, first):
        pitr(replica_file, "checkout", stamp)
        assert kv_rows(replica_file) == expected
