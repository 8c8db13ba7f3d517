"""Continuous backup to a real S3-compatible server, and `pitr restore` from it."""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
from pathlib import Path

import pytest

from denokv.proto import backup_pb2
from tests.support.backup_proofs import (
    PREFIX,
    complete_generations,
    primary,
    restore,
    wait_shipped,
    workload,
)
from tests.support.dbfile import kv_rows, point_of
from tests.support.deno import run_deno
from tests.support.s3 import get_object, list_keys, put_object
from tests.support.waiting import wait_until

pytestmark = pytest.mark.s3

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.mark.deno
@pytest.mark.slow
def test_restores_every_recorded_point_exactly(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket).start()
    points: list[tuple[str, list[tuple[bytes, bytes, int, int]]]] = []
    try:
        for phase in range(3):
            asyncio.run(workload(srv.url, srv.token, phase))
            stamp = point_of(srv.db_path)
            points.append((stamp, kv_rows(srv.db_path)))
        wait_shipped(srv.db_path)
    finally:
        assert srv.stop() == 0
    for i, (stamp, rows) in enumerate(points):
        done = restore(tmp_path, endpoint, bucket, stamp, f"at-{i}.sqlite")
        assert done.returncode == 0, done.stderr
        assert f"at versionstamp {stamp}" in done.stdout
        assert kv_rows(tmp_path / f"at-{i}.sqlite") == rows, f"point {i} differs"
    latest = restore(tmp_path, endpoint, bucket, None, "latest.sqlite")
    assert latest.returncode == 0, latest.stderr
    assert kv_rows(tmp_path / "latest.sqlite") == points[-1][1]
    # The restored file is a plain Deno KV file.
    dumped = run_deno("dump.ts", str(tmp_path / "latest.sqlite"))
    assert any(row["key"] == ["counter"] and row["value"] == {"u64": "21"} for row in dumped)


def test_restore_to_a_time_stops_between_commits(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket).start()
    try:
        asyncio.run(workload(srv.url, srv.token, 0))
        before = kv_rows(srv.db_path)
        time.sleep(0.05)
        moment = time.time()
        time.sleep(0.05)
        asyncio.run(workload(srv.url, srv.token, 1))
        wait_shipped(srv.db_path)
    finally:
        srv.stop()
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
    done = restore(tmp_path, endpoint, bucket, at, "at-time.sqlite")
    assert done.returncode == 0, done.stderr
    assert kv_rows(tmp_path / "at-time.sqlite") == before


@pytest.mark.slow
def test_new_generation_mid_workload_and_points_on_both_sides(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket, "--s3-snapshot-interval", "1s").start()
    points = []
    try:
        for phase in range(3):
            asyncio.run(workload(srv.url, srv.token, phase))
            points.append((point_of(srv.db_path), kv_rows(srv.db_path)))
            time.sleep(1.5)  # let the next snapshot interval pass
        wait_shipped(srv.db_path)
    finally:
        srv.stop()
    generations = {k.split("/")[3] for k in list_keys(endpoint, bucket, PREFIX + "generations/")}
    assert len(generations) >= 3
    for i, (stamp, rows) in enumerate(points):
        done = restore(tmp_path, endpoint, bucket, stamp, f"gen-{i}.sqlite")
        assert done.returncode == 0, done.stderr
        assert kv_rows(tmp_path / f"gen-{i}.sqlite") == rows


def test_plain_protobuf_layout_with_compression_none(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket, "--s3-compression", "none").start()
    try:
        asyncio.run(workload(srv.url, srv.token, 0))
        wait_shipped(srv.db_path)
    finally:
        srv.stop()
    keys = list_keys(endpoint, bucket, PREFIX + "generations/")
    [generation] = {k.split("/")[3] for k in keys}
    base = f"{PREFIX}generations/{generation}/"
    # Beside upstream's objects, only our lineage record; the lease sits outside the folder.
    assert {k for k in keys if not k.startswith((base + "logs/", base + "snapshots/"))} == {
        base + "differential",
        base + "lineage.json",
    }
    assert PREFIX + "lock.json" in list_keys(endpoint, bucket, PREFIX)
    # Upstream's rules: differential is exactly 20 hex characters, names follow format 1.
    differential = get_object(endpoint, bucket, base + "differential").decode()
    assert re.fullmatch(r"[0-9a-f]{20}", differential)
    logs = [k for k in keys if k.startswith(base + "logs/")]
    snaps = [k for k in keys if k.startswith(base + "snapshots/")]
    assert logs and snaps
    entries = []
    for key in logs:
        name = key.rsplit("/", 1)[1]
        assert re.fullmatch(r"0001_[0-9a-f]{16}_[0-9a-f]{24}_[0-9a-f]{24}\.bin", name)
        body = get_object(endpoint, bucket, key)
        assert not body.startswith(ZSTD_MAGIC)
        msg = backup_pb2.BackupMutationRange.FromString(body)
        assert msg.timestamp_ms > 0
        entries += list(msg.entries)
    for key in snaps:
        assert re.fullmatch(r"0001_[0-9a-f]{16}_[0-9a-f]{16}\.bin", key.rsplit("/", 1)[1])
        snap = backup_pb2.BackupSnapshotRange.FromString(get_object(endpoint, bucket, key))
        assert len(snap.data_list) == len(snap.metadata_list)
    stamps = [e.versionstamp for e in entries]
    assert stamps == sorted(stamps) and all(len(s) == 12 for s in stamps)
    assert stamps[-1].endswith(b"\xff\xff")
    kinds = {e.kind for e in entries}
    assert kinds == {backup_pb2.MK_SET, backup_pb2.MK_CLEAR}
    # A sum is logged as the value it produced: the counter's last entry holds 7 as LE64.
    counter = [e for e in entries if e.key == b"\x02counter\x00"]
    assert counter[-1].value == (7).to_bytes(8, "little") and counter[-1].value_encoding == 2


@pytest.mark.slow
def test_shipping_survives_s3_faults_without_losing_or_reordering(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    fault_proxy,
) -> None:
    direct = s3_bucket[0]
    proxy, endpoint, bucket = fault_proxy
    srv = primary(tmp_path, endpoint, bucket).start()
    try:
        asyncio.run(workload(srv.url, srv.token, 0))
        wait_shipped(srv.db_path)
        for fault in (proxy.error_503, proxy.drop, lambda: proxy.slow(2.0)):
            fault()
            asyncio.run(workload(srv.url, srv.token, 1))  # writes keep working
            time.sleep(1.0)
            proxy.passthrough()
            wait_shipped(srv.db_path, timeout=60)
        final = kv_rows(srv.db_path)
        stamp = point_of(srv.db_path)
    finally:
        srv.stop()
    counts = proxy.counts
    assert counts.get("error_503", 0) > 0 and counts.get("drop", 0) > 0
    done = restore(tmp_path, direct, bucket, None, "after-faults.sqlite")
    assert done.returncode == 0, done.stderr
    assert f"at versionstamp {stamp}" in done.stdout
    assert kv_rows(tmp_path / "after-faults.sqlite") == final
    logs = sorted(k for k in list_keys(direct, bucket, PREFIX) if "/logs/" in k)
    ranges = [(n.split("_")[2], n.split("_")[3][:24]) for n in (k.rsplit("/", 1)[1] for k in logs)]
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first > last, "segments overlap or are out of order"


@pytest.mark.slow
def test_sigkill_then_restart_ships_everything(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket).start()
    asyncio.run(workload(srv.url, srv.token, 0))
    wait_shipped(srv.db_path)
    asyncio.run(workload(srv.url, srv.token, 1))
    srv.stop(sig=signal.SIGKILL)  # the backlog (and maybe a shipped, untrimmed segment) stays
    srv.start()
    try:
        asyncio.run(workload(srv.url, srv.token, 2))
        wait_shipped(srv.db_path)
        final = kv_rows(srv.db_path)
    finally:
        srv.stop()
    done = restore(tmp_path, endpoint, bucket, None, "after-kill.sqlite")
    assert done.returncode == 0, done.stderr
    assert kv_rows(tmp_path / "after-kill.sqlite") == final


@pytest.mark.node
@pytest.mark.slow
def test_round_trip_on_s3rver(tmp_path: Path, s3rver_s3: tuple[str, str]) -> None:
    endpoint, bucket = s3rver_s3
    srv = primary(tmp_path, endpoint, bucket).start()
    try:
        asyncio.run(workload(srv.url, srv.token, 0))
        wait_shipped(srv.db_path)
        final = kv_rows(srv.db_path)
    finally:
        srv.stop()
    done = restore(tmp_path, endpoint, bucket, None, "s3rver.sqlite")
    assert done.returncode == 0, done.stderr
    assert kv_rows(tmp_path / "s3rver.sqlite") == final


@pytest.mark.slow
def test_restore_errors_are_clear(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    empty = restore(tmp_path, endpoint, bucket, None, "nothing.sqlite")
    assert empty.returncode == 1
    assert "no backup found" in empty.stderr
    assert not (tmp_path / "nothing.sqlite").exists()
    init = restore(tmp_path, endpoint, bucket, None, "nothing.sqlite", "--if-not-exists")
    assert init.returncode == 0, init.stderr  # a new primary's init step on an empty bucket
    assert "the server will start empty" in init.stdout

    srv = primary(tmp_path, endpoint, bucket).start()
    try:
        # The workload must reach a log segment (the corrupt-segment case below),
        # not only the first generation's snapshot: start it once that snapshot is up.
        wait_until(lambda: bool(complete_generations(endpoint, bucket)), 30, "a first generation")
        asyncio.run(workload(srv.url, srv.token, 0))
        wait_shipped(srv.db_path)
    finally:
        srv.stop()
    early = restore(tmp_path, endpoint, bucket, "2001-01-01T00:00:00Z", "early.sqlite")
    assert early.returncode == 1 and "is before the oldest backup" in early.stderr
    bad = restore(tmp_path, endpoint, bucket, "yesterday", "bad.sqlite")
    assert bad.returncode == 1 and "invalid --at" in bad.stderr

    # A corrupt segment is named in the error, and no file appears at the target.
    log_key = next(k for k in list_keys(endpoint, bucket, PREFIX) if "/logs/" in k)
    put_object(endpoint, bucket, log_key, ZSTD_MAGIC + b"garbage")
    corrupt = restore(tmp_path, endpoint, bucket, None, "corrupt.sqlite")
    assert corrupt.returncode == 1
    assert log_key in corrupt.stderr
    assert not (tmp_path / "corrupt.sqlite").exists()

    (tmp_path / "exists.sqlite").write_bytes(b"keep me")
    skip = restore(tmp_path, endpoint, bucket, None, "exists.sqlite", "--if-not-exists")
    assert skip.returncode == 0 and "nothing to restore" in skip.stdout
    assert (tmp_path / "exists.sqlite").read_bytes() == b"keep me"
