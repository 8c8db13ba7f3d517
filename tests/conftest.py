"""Shared fixtures: real `denokv` server processes on 127.0.0.1 and real S3 servers.

What the fixtures start is in `tests/support/` (importable by tests and benchmarks);
the plugin `tests.support.markers` checks that a test which starts Deno, Node.js, an S3
server, the chart tools or Chromium carries the marker `make test-fast` leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.moto import MotoServer
from tests.support.processes import ServerFactory, ServerProcess
from tests.support.s3 import create_bucket, unique_bucket_name
from tests.support.s3rver import S3rver, s3rver_available

pytest_plugins = ("tests.support.markers",)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "kv.sqlite").start()
    yield srv
    srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[ServerProcess] = []

    def make(**kwargs: Any) -> ServerProcess:
        kwargs.setdefault("db_path", tmp_path / f"kv{len(started)}.sqlite")
        srv = ServerProcess(**kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        if srv.proc is not None:
            srv.stop()


# -- S3-compatible servers (the markers they need: tests.support.markers.FIXTURE_MARKERS)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the whole session."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    srv = MotoServer(log_path=log).start()
    yield srv
    srv.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoServer) -> tuple[str, str]:
    """A fresh, empty bucket on the session's moto server: (endpoint_url, bucket)."""
    bucket = unique_bucket_name()
    create_bucket(moto_s3.endpoint, bucket)
    return moto_s3.endpoint, bucket


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3rver]:
    if not s3rver_available():
        pytest.skip("node or tests/node/node_modules/s3rver missing (npm install in tests/node)")
    base = tmp_path_factory.mktemp("s3rver")
    srv = S3rver(directory=base / "data", log_path=base / "s3rver.log").start()
    yield srv
    srv.stop()


@pytest.fixture
def s3rver_s3(s3rver_server: S3rver) -> tuple[str, str]:
    """A fresh, empty bucket on the session's s3rver: (endpoint_url, bucket)."""
    bucket = unique_bucket_name()
    create_bucket(s3rver_server.endpoint, bucket)
    return s3rver_server.endpoint, bucket


@pytest.fixture
def fault_proxy(s3_bucket: tuple[str, str]) -> Iterator[tuple[FaultProxy, str, str]]:
    """A FaultProxy (passthrough) in front of moto: (proxy, proxied_endpoint, bucket)."""
    endpoint, bucket = s3_bucket
    proxy = FaultProxy(endpoint).start()
    try:
        yield proxy, proxy.endpoint, bucket
    finally:
        proxy.stop()
