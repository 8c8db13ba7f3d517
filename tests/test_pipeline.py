"""One error ladder for every route, on RSGI (granian, in-process) and on ASGI.

The engine is a real one on a temporary file; only the call under test is
made to fail, so each rung of the ladder is reached the way a real fault
would reach it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from denokv import texts as T
from denokv.engine import Engine
from denokv.engine_errors import EngineUnavailable, WriteError
from denokv.proto import datapath_pb2 as pb
from denokv.server.app import KvServer, ServerConfig
from denokv.server.http import _serve_granian
from tests.support.kvconnect import NIL_ID, set_mutation
from tests.support.ports import free_port, wait_for_port

TOKEN = "pipeline-token-0123456789"
HEADERS = {"authorization": f"Bearer {TOKEN}", "x-denokv-version": "3",
           "x-denokv-database-id": NIL_ID}  # fmt: skip
READ = pb.SnapshotRead(ranges=[pb.ReadRange(start=b"\x02a", end=b"\x02b", limit=1)])
WRITE = pb.AtomicWrite(mutations=[set_mutation(b"\x02a\x00", b"x")])


async def _boom_route(request: Request) -> Response:
    raise RuntimeError("boom in a framework route")


@pytest.fixture
def kv_server(tmp_path: Path) -> Iterator[KvServer]:
    engine = Engine(str(tmp_path / "kv.sqlite"))
    server = KvServer(engine, ServerConfig(access_token=TOKEN))
    server.operations.router.routes.append(Route("/boom", _boom_route, methods=["GET"]))
    yield server
    engine.close()


@pytest.fixture
def rsgi_url(kv_server: KvServer) -> Iterator[str]:
    """The server on granian's RSGI interface, in a thread of this process."""
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(_serve_granian(kv_server, "127.0.0.1", port, stop, rsgi=True),),
        daemon=True,
    )
    thread.start()
    wait_for_port(port, None)
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(20)


def fail_with(server: KvServer, exc: Exception) -> None:
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise exc

    def failing_now(*args: Any, **kwargs: Any) -> Any:
        raise exc

    # Reads on the caller's thread (the server's one reader) or awaited: both fail.
    server.engine.read_rows = failing_now  # type: ignore[method-assign]
    server.engine.snapshot_read_rows = failing  # type: ignore[method-assign]
    server.engine.atomic_write = failing  # type: ignore[method-assign]


CASES = [
    (RuntimeError("kaboom"), 500, T.INTERNAL_ERROR, 1),
    (EngineUnavailable("The disk is full; try again later."), 503,
     "The disk is full; try again later.", 0),
    (WriteError("That write cannot be applied."), 400, "That write cannot be applied.", 0),
]  # fmt: skip


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("exc", "status", "text", "tracebacks"), CASES)
@pytest.mark.parametrize("http2", [False, True])
def test_rsgi_ladder(kv_server: KvServer, rsgi_url: str, caplog: pytest.LogCaptureFixture,
                     exc: Exception, status: int, text: str, tracebacks: int,
                     http2: bool) -> None:  # fmt: skip
    fail_with(kv_server, exc)
    with httpx.Client(http1=not http2, http2=http2) as client:
        for path, msg in (("/v2/snapshot_read", READ), ("/v2/atomic_write", WRITE)):
            resp = client.post(rsgi_url + path, content=msg.SerializeToString(), headers=HEADERS)
            assert (resp.status_code, resp.text) == (status, text), path
            assert resp.headers["content-type"].startswith("text/plain")
    logged = errors_logged(caplog)
    assert len(logged) == 2 * tracebacks  # one per failing request, each with its traceback
    assert all(r.exc_info is not None for r in logged)


def test_rsgi_framework_route_error_is_a_500_logged_once(
    rsgi_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    resp = httpx.get(rsgi_url + "/boom")
    assert (resp.status_code, resp.text) == (500, T.INTERNAL_ERROR)
    logged = errors_logged(caplog)
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert httpx.get(rsgi_url + "/no/such/route").text == T.NOT_FOUND


@pytest.mark.parametrize(("exc", "status", "text", "tracebacks"), CASES)
async def test_asgi_ladder(kv_server: KvServer, caplog: pytest.LogCaptureFixture,
                           exc: Exception, status: int, text: str,
                           tracebacks: int) -> None:  # fmt: skip
    fail_with(kv_server, exc)
    transport = httpx.ASGITransport(app=kv_server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path, msg in (("/v2/snapshot_read", READ), ("/v2/atomic_write", WRITE)):
            resp = await client.post(path, content=msg.SerializeToString(), headers=HEADERS)
            assert (resp.status_code, resp.text) == (status, text), path
        boom = await client.get("/boom")
        assert (boom.status_code, boom.text) == (500, T.INTERNAL_ERROR)
    logged = errors_logged(caplog)
    assert len(logged) == 2 * tracebacks + 1  # + the framework route's
    assert all(r.exc_info is not None for r in logged)
