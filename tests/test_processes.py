"""Serving from several processes: reads everywhere, one writer, watches that fire across.

The kernel spreads connections over the processes sharing the port, so each
test opens many connections (the chance that 16 land on one of two processes
is 2**-15) and checks through `/metrics` that both processes served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from denokv.proto import datapath_pb2 as pb
from tests.support.kvconnect import RawKv, set_mutation
from tests.support.paths import ROOT
from tests.support.ports import wait_for_port
from tests.support.processes import ServerProcess

# Each test starts a server of two processes and waits for both: 2-4 s a test.
pytestmark = pytest.mark.slow

CONNECTIONS = 16


@pytest.fixture
def two(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "kv.sqlite", extra_args=["--processes", "2"]).start()
    wait_processes(srv, 2)
    yield srv
    srv.stop()


def metrics(srv: ServerProcess) -> str:
    return httpx.get(srv.url + "/metrics", timeout=10).text


def samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric."""
    out = {}
    for line in text.splitlines():
        found = re.fullmatch(rf"{re.escape(name)}(\{{.*\}})? ([0-9.e+-]+)", line)
        if found:
            out[found.group(1) or ""] = float(found.group(2))
    return out


def per_process(text: str, endpoint: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for labels, value in samples(text, "denokv_requests_total").items():
        if f'endpoint="{endpoint}"' in labels:
            found = re.search(r'process="(\d+)"', labels)
            assert found is not None, labels
            process = found.group(1)
            counts[process] = counts.get(process, 0) + value
    return counts


def wait_processes(srv: ServerProcess, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while samples(metrics(srv), "denokv_server_processes").get("") != n:
        assert time.monotonic() < deadline, f"{n} server processes did not come up"
        time.sleep(0.1)


def wait_counted(
    srv: ServerProcess, endpoint: str, total: float, timeout: float = 10
) -> dict[str, float]:
    """Worker counts reach the main process once a second; wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        counts = per_process(metrics(srv), endpoint)
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def clients(srv: ServerProcess, n: int = CONNECTIONS) -> list[RawKv]:
    return [RawKv(srv.url, srv.token, http2=i % 2 == 0) for i in range(n)]


def test_writes_from_every_process_share_one_version_order(two: ServerProcess) -> None:
    kvs = clients(two)
    stamps = []
    try:
        for round_ in range(3):
            for i, kv in enumerate(kvs):
                key = b"\x02w%d_%d\x00" % (round_, i)
                out = kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(key, b"v")]))
                stamps.append(out.versionstamp)
        for i, kv in enumerate(kvs):  # every process reads every write at once
            for round_ in range(3):
                assert kv.get(b"\x02w%d_%d\x00" % (round_, i)) is not None
    finally:
        for kv in kvs:
            kv.close()
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    counts = wait_counted(two, "atomic_write", 3 * CONNECTIONS)
    assert set(counts) == {"0", "1"}, f"one process served every write: {counts}"
    assert sum(counts.values()) == 3 * CONNECTIONS
    assert samples(metrics(two), "denokv_worker_calls_total")[""] == counts["1"]


def test_a_value_cached_in_any_process_gives_way_to_every_acknowledged_write(
    two: ServerProcess,
) -> None:
    """Each round, one connection writes and then every connection reads the key twice:
    the second read of the round before came from each process's read cache."""
    key = b"\x02cached\x00"
    kvs = clients(two)
    try:
        for round_ in range(2 * CONNECTIONS):
            want = b"v%d" % round_
            kvs[round_ % CONNECTIONS].write_ok(pb.AtomicWrite(mutations=[set_mutation(key, want)]))
            for kv in kvs:
                for _ in range(2):
                    entry = kv.get(key)
                    assert entry is not None and entry.value == want, (round_, entry)
    finally:
        for kv in kvs:
            kv.close()
    deadline = time.monotonic() + 10
    while True:  # worker figures reach the main process once a second
        hits = samples(metrics(two), "denokv_read_cache_hits_total")
        if len(hits) == 2 and all(v > 0 for v in hits.values()):
            break
        assert time.monotonic() < deadline, f"the read cache was not used in both: {hits}"
        time.sleep(0.2)


def test_a_check_failure_through_a_worker_is_reported(two: ServerProcess) -> None:
    kvs = clients(two)
    try:
        kvs[0].write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02c\x00", b"1")]))
        results = [
            kv.write_ok(
                pb.AtomicWrite(
                    checks=[pb.Check(key=b"\x02c\x00", versionstamp=b"\x00" * 10)],
                    mutations=[set_mutation(b"\x02c\x00", b"2")],
                )
            )
            for kv in kvs
        ]
        bad = [
            kv.write(pb.AtomicWrite(checks=[pb.Check(key=b"k", versionstamp=b"x")])) for kv in kvs
        ]
    finally:
        for kv in kvs:
            kv.close()
    assert all(r.status == pb.AW_CHECK_FAILURE and list(r.failed_checks) == [0] for r in results)
    assert {(r.status_code, r.text) for r in bad} == {(400, "Invalid versionstamp.")}


def test_a_primary_has_no_strong_routes_in_any_process(two: ServerProcess) -> None:
    """`/strong/v2/...` belongs to a replica that forwards; a primary's workers must not
    offer it either (they used to pass the read to the main process, which had no
    forwarder: a 500, which Deno retries forever)."""
    kvs = clients(two)
    body = pb.SnapshotRead(ranges=[pb.ReadRange(start=b"\x02", end=b"\x03", limit=1)])
    try:
        answers = [kv.post("/strong/v2/snapshot_read", body.SerializeToString()) for kv in kvs]
    finally:
        for kv in kvs:
            kv.close()
    assert {r.status_code for r in answers} == {404}
    assert "unexpected error" not in two.logs()


async def _watch(url: str, token: str, key: bytes, seen: asyncio.Queue[bytes]) -> None:
    headers = {
        "authorization": f"Bearer {token}",
        "x-denokv-version": "3",
        "x-denokv-database-id": "00000000-0000-0000-0000-000000000000",
    }
    body = pb.Watch(keys=[pb.WatchKey(key=key)]).SerializeToString()
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url + "/v2/watch", content=body, headers=headers) as resp,
    ):
        buffer = b""
        async for chunk in resp.aiter_bytes():
            buffer += chunk
            while len(buffer) >= 4:
                n = int.from_bytes(buffer[:4], "little")
                if len(buffer) < 4 + n:
                    break
                frame, buffer = buffer[4 : 4 + n], buffer[4 + n :]
                if n:
                    out = pb.WatchOutput.FromString(frame)
                    entry = out.keys[0].entry_if_changed
                    await seen.put(entry.value)


def test_watches_fire_in_every_process_for_writes_through_any(two: ServerProcess) -> None:
    key = b"\x02watched\x00"

    async def scenario() -> list[list[bytes]]:
        queues: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in range(CONNECTIONS)]
        tasks = [asyncio.create_task(_watch(two.url, two.token, key, q)) for q in queues]
        try:
            for q in queues:
                assert await asyncio.wait_for(q.get(), 10) == b""  # the initial state
            writers = clients(two, 6)
            for i, kv in enumerate(writers):
                kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(key, b"v%d" % i)]))
                for q in queues:  # every watcher sees every change, in order
                    assert await asyncio.wait_for(q.get(), 10) == b"v%d" % i
            for kv in writers:
                kv.close()
            return [[] for _ in queues]
        finally:
            for t in tasks:
                t.cancel()

    asyncio.run(scenario())
    counts = wait_counted(two, "watch", CONNECTIONS)
    assert set(counts) == {"0", "1"}, f"every watch landed on one process: {counts}"


def test_other_routes_describe_the_whole_server_from_any_process(two: ServerProcess) -> None:
    texts = []
    for _ in range(CONNECTIONS):
        with httpx.Client() as client:  # a new connection each time
            texts.append(client.get(two.url + "/metrics").text)
            assert client.get(two.url + "/readyz").text == "ready"
    # Only the main process has a writer: every answer carries its figures.
    assert all(samples(t, "denokv_writer_alive").get("") == 1.0 for t in texts)
    assert all(samples(t, "denokv_server_processes").get("") == 2.0 for t in texts)
    # The worker relayed the ones that reached it, and counted them.
    counts = wait_counted(two, "relayed", 1)
    assert counts.get("1", 0) >= 1, f"no request reached the worker: {counts}"


def test_every_process_answers_the_probes_with_the_whole_servers_state(tmp_path: Path) -> None:
    from tests.support.ports import free_port
    from tests.support.s3 import s3_env

    # Backup to an S3 endpoint nobody listens on: the backlog ages and the shipper
    # (in the main process only) makes the server unready after 1 s.
    closed = f"http://127.0.0.1:{free_port()}"
    srv = ServerProcess(
        tmp_path / "kv.sqlite",
        env=s3_env(),
        extra_args=["--processes", "2", "--s3-bucket", "b", "--s3-endpoint", closed,
                    "--s3-force-path-style", "--ready-max-backup-lag", "1s"],
    ).start()  # fmt: skip
    try:
        wait_processes(srv, 2)
        kv = RawKv(srv.url, srv.token)
        kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02unshipped\x00", b"v")]))
        kv.close()
        deadline = time.monotonic() + 30
        while httpx.get(srv.url + "/readyz", timeout=10).status_code != 503:
            assert time.monotonic() < deadline, "the backlog never made the server unready"
            time.sleep(0.2)
        time.sleep(0.5)  # the main process's next report reaches the worker
        answers = []
        for _ in range(CONNECTIONS):
            with httpx.Client(timeout=10) as client:  # a new connection each time
                answers.append(client.get(srv.url + "/readyz"))
        assert {a.status_code for a in answers} == {503}
        assert all("backup is more than 1 s behind" in a.text for a in answers)
        # The worker answered the ones that reached it itself (not relayed).
        counts = wait_counted(srv, "readyz", CONNECTIONS + 1)
        assert counts.get("1", 0) >= 1, f"no probe was answered by the worker: {counts}"
    finally:
        srv.stop()


def test_a_worker_is_unready_while_the_main_process_is_silent(two: ServerProcess) -> None:
    assert two.proc is not None
    os.kill(two.proc.pid, signal.SIGSTOP)  # the main process: its loop stops reporting
    try:
        time.sleep(3.5)  # past the worker's MAIN_SILENT_S
        answers = []
        for _ in range(CONNECTIONS):
            try:  # connections the kernel gives to the stopped main process time out
                answers.append(httpx.get(two.url + "/readyz", timeout=1))
            except httpx.TimeoutException:
                pass
    finally:
        os.kill(two.proc.pid, signal.SIGCONT)
    assert answers, "every probe went to the stopped main process"
    assert {a.status_code for a in answers} == {503}
    assert all("the main server process has not reported for" in a.text for a in answers)
    deadline = time.monotonic() + 10
    while any(httpx.get(two.url + "/readyz", timeout=10).status_code != 200 for _ in range(8)):
        assert time.monotonic() < deadline, "the worker did not become ready again"
        time.sleep(0.2)


def test_a_worker_that_dies_is_started_again(two: ServerProcess) -> None:
    worker = _worker_pids(two)
    assert len(worker) == 1
    os.kill(worker[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while samples(metrics(two), "denokv_server_process_restarts_total").get("") != 1.0:
        assert time.monotonic() < deadline, "the worker was not started again"
        time.sleep(0.2)
    wait_processes(two, 2)
    assert _worker_pids(two) != worker
    kvs = clients(two)
    try:
        for i, kv in enumerate(kvs):
            kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02after%d\x00" % i, b"v")]))
    finally:
        for kv in kvs:
            kv.close()


def test_sigterm_commits_what_every_process_acknowledged(two: ServerProcess) -> None:
    kvs = clients(two)
    acknowledged = []
    try:
        for i, kv in enumerate(kvs):
            key = b"\x02ack%d\x00" % i
            kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(key, b"v")]))
            acknowledged.append(key)
    finally:
        for kv in kvs:
            kv.close()
    assert two.stop() == 0
    conn = sqlite3.connect(two.db_path)
    try:
        stored = {row[0] for row in conn.execute("select k from kv")}
    finally:
        conn.close()
    assert set(acknowledged) <= stored
    assert _worker_pids(two) == [], "a worker outlived the server"


def test_a_stop_while_a_worker_starts_logs_no_error(tmp_path: Path) -> None:
    # Stopped as soon as the port opens, the worker is still starting: it dies
    # with the main process's first frames unread, and its socket resets.
    for round_ in range(3):
        srv = ServerProcess(tmp_path / f"kv{round_}.sqlite", extra_args=["--processes", "2"])
        srv.start()
        assert srv.stop() == 0
        logs = srv.logs()
        assert "started server process 1" in logs
        assert "ERROR" not in logs, logs


@pytest.mark.parametrize("after_s", [0.0, 0.02, 0.05, 0.1, 0.2, 1.5])
def test_ctrl_c_stops_every_process_quietly(tmp_path: Path, after_s: float) -> None:
    # Ctrl-C in a terminal sends SIGINT to the whole process group. A worker
    # still starting (the short waits) must not die of it with a traceback: the main
    # process stops the workers itself.
    srv = ServerProcess(tmp_path / "kv.sqlite", extra_args=["--processes", "2"])
    log = open(tmp_path / "kv.log", "wb")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "DENO_KV_ACCESS_TOKEN": srv.token}
    proc = subprocess.Popen(srv.command(), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    log.close()
    try:
        wait_for_port(srv.port, proc)
        time.sleep(after_s)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = (tmp_path / "kv.log").read_text()
    assert "started server process 1" in text
    assert "stopped; all acknowledged writes are committed" in text
    for bad in ("Traceback", "Fatal Python error", "ERROR", "KeyboardInterrupt"):
        assert bad not in text, text


def test_a_worker_stops_when_the_main_process_is_killed(two: ServerProcess) -> None:
    # Workers have a process group of their own, so nothing signals them when
    # the main process dies: they must notice its socket close and go.
    workers = _worker_pids(two)
    assert len(workers) == 1
    assert two.proc is not None
    two.proc.kill()
    two.proc.wait()
    deadline = time.monotonic() + 15
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the main process"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _worker_pids(srv: ServerProcess) -> list[int]:
    assert srv.proc is not None
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if parent == srv.proc.pid and b"denokv.server.worker" in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.s3
def test_with_backup_every_process_writes_reach_the_one_shipper(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
) -> None:
    from tests.support.s3 import list_keys, s3_env

    endpoint, bucket = s3_bucket
    srv = ServerProcess(
        tmp_path / "kv.sqlite",
        env=s3_env(),
        extra_args=["--processes", "2", "--s3-bucket", bucket, "--s3-prefix", "mp/",
                    "--s3-endpoint", endpoint, "--s3-force-path-style",
                    "--s3-sync-interval", "200ms", "--s3-lease-ttl", "60s"],
    ).start()  # fmt: skip
    try:
        wait_processes(srv, 2)
        kvs = clients(srv)
        try:
            for i, kv in enumerate(kvs):
                kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02b%d\x00" % i, b"v")]))
        finally:
            for kv in kvs:
                kv.close()
        deadline = time.monotonic() + 30
        while samples(metrics(srv), "denokv_redo_backlog_entries").get("") != 0.0:
            assert time.monotonic() < deadline, "the backlog was not shipped"
            time.sleep(0.2)
        text = metrics(srv)
        assert samples(text, "denokv_s3_generations_total")[""] == 1.0  # one shipper, one start
        assert samples(text, "denokv_backup_lease_held")[""] == 1.0
    finally:
        srv.stop()
    generations = {k.split("/")[2] for k in list_keys(endpoint, bucket, "mp/generations/")}
    assert len(generations) == 1
    assert "another primary holds the backup lease" not in srv.logs()
