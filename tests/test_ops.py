"""Health, readiness and Prometheus metrics of a running server."""

from __future__ import annotations

import re

import httpx

from denokv.proto import datapath_pb2 as pb
from tests.support.kvconnect import RawKv, set_mutation
from tests.support.ports import free_port
from tests.support.processes import ServerFactory, ServerProcess


def metric(text: str, name: str, labels: str = "") -> float:
    """The sum of the samples of `name` whose labels include `labels` (over every process)."""
    wanted = set(re.findall(r'(\w+="[^"]*")', labels))
    found = []
    for line in text.splitlines():
        sample = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? ([0-9.e+-]+)", line)
        if sample and wanted <= set(re.findall(r'(\w+="[^"]*")', sample.group(1) or "")):
            found.append(float(sample.group(2)))
    assert found, f"{name}{labels} not in metrics"
    return sum(found)


def test_health_needs_no_token_and_reveals_nothing(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/healthz").text == "ok"
    ready = httpx.get(server.url + "/readyz")
    assert (ready.status_code, ready.text) == (200, "ready")


def test_metrics_move_with_traffic(server: ServerProcess) -> None:
    before = httpx.get(server.url + "/metrics").text
    kv = RawKv(server.url, server.token, http2=True)
    for i in range(5):
        kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02m%d\x00" % i, b"secret")]))
    kv.get(b"\x02m1\x00")
    kv.write(pb.AtomicWrite(checks=[pb.Check(key=b"k", versionstamp=b"bad")]))  # a 400
    kv.write_ok(pb.AtomicWrite(enqueues=[pb.Enqueue(payload=b"p", deadline_ms=1)]))
    kv.close()
    after = httpx.get(server.url + "/metrics").text
    ok = '{endpoint="atomic_write",status="200"}'
    had = metric(before, "denokv_requests_total", ok) if '"atomic_write"' in before else 0
    assert metric(after, "denokv_requests_total", ok) - had == 6
    assert metric(after, "denokv_requests_total", '{endpoint="atomic_write",status="400"}') == 1
    assert metric(after, "denokv_requests_total", '{endpoint="snapshot_read",status="200"}') == 1
    assert metric(after, "denokv_commits_total") >= 1
    assert metric(after, "denokv_atomic_writes_total") == 6
    assert metric(after, "denokv_group_commit_size_count") == metric(after, "denokv_commits_total")
    assert metric(after, "denokv_queue_depth") == 1
    assert "denokv_request_duration_seconds_bucket" in after
    assert "secret" not in after and server.token not in after


def test_metrics_on_their_own_address(server_factory: ServerFactory) -> None:
    port = free_port()
    srv = server_factory(extra_args=["--metrics-addr", f"127.0.0.1:{port}"]).start()
    assert httpx.get(srv.url + "/metrics").status_code == 404
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "denokv_watch_streams_open" in text
