"""The real Deno CLI as a client of denokv, compared with Deno's own local engine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.deno import run_deno
from tests.support.processes import ServerFactory, ServerProcess

pytestmark = pytest.mark.deno


def test_core_api_gives_the_same_results_as_denos_own_engine(
    server: ServerProcess, tmp_path: Path
) -> None:
    remote = run_deno("core.ts", server.url, token=server.token)
    local = run_deno("core.ts", str(tmp_path / "local.sqlite"))
    assert remote == local
    # Spot-check that the comparison is not vacuous.
    assert remote["cursorPages"] == [[100, 0, 198], [100, 200, 398], [50, 400, 498]]
    assert remote["atomic"]["fail"] is False and remote["atomic"]["pass"] is True
    assert remote["sums"] == {"n": "12", "lo": "3", "hi": "10", "wrap": "1"}


@pytest.mark.slow
def test_watch_sees_initial_state_changes_and_deletes(server: ServerProcess) -> None:
    seen = run_deno("watch.ts", server.url, token=server.token)
    assert seen == [["a0", None], ["a0", "b1"], [None, "b1"], ["a2", "b1"]]


def test_wrong_token_is_reported_to_the_deno_program(server: ServerProcess) -> None:
    out = run_deno("errors.ts", server.url, "get", token="not-the-right-token")
    assert "Invalid access token." in out["get"]


def test_read_only_server_refuses_writes_and_serves_reads(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    db = tmp_path / "ro.sqlite"
    run_deno("populate.ts", str(db))
    srv = server_factory(db_path=db, extra_args=["--read-only"]).start()
    out = run_deno("errors.ts", srv.url, "get", "set", token=srv.token)
    assert out["get"] == "ok"
    assert out["set"] == "Writes are disabled for this database"


def test_a_file_written_by_deno_is_served_with_every_value_intact(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    db = tmp_path / "from-deno.sqlite"
    run_deno("populate.ts", str(db))
    local = run_deno("dump.ts", str(db))
    srv = server_factory(db_path=db).start()
    served = run_deno("dump.ts", srv.url, token=srv.token)
    assert served == local
    assert len(local) == 13


def test_a_file_written_through_denokv_opens_in_deno(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    db = tmp_path / "via-server.sqlite"
    srv = server_factory(db_path=db).start()
    run_deno("populate.ts", srv.url, token=srv.token)
    served = run_deno("dump.ts", srv.url, token=srv.token)
    assert srv.stop() == 0
    local = run_deno("dump.ts", str(db))
    assert local == served
    assert {"key": ["str", "hello"], "value": "again"}.items() <= local[-1].items() or any(
        row["key"] == ["str", "hello"] and row["value"] == "again" for row in local
    )


def test_hypercorn_serves_deno_too(server_factory: ServerFactory, tmp_path: Path) -> None:
    srv = server_factory(http_server="hypercorn").start()
    remote = run_deno("core.ts", srv.url, token=srv.token)
    local = run_deno("core.ts", str(tmp_path / "local.sqlite"))
    assert remote == local


def test_expired_keys_are_never_returned(server: ServerProcess) -> None:
    out = run_deno("expiry.ts", server.url, token=server.token)
    assert out["before"] == "soon gone"
    assert out["after"] is None
    assert out["listed"] == []
    assert out["checkAsAbsent"] is True


@pytest.mark.slow
def test_sigterm_finishes_writes_in_flight(server: ServerProcess) -> None:
    import subprocess

    from tests.support.deno import deno_binary, deno_env
    from tests.support.paths import DENO_SCRIPTS

    writer = subprocess.Popen(
        [deno_binary(), "run", "--unstable-kv", "-A", str(DENO_SCRIPTS / "writer.ts"), server.url],
        env=deno_env(server.token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    assert server.stop() == 0
    writer.kill()
    out, _ = writer.communicate(timeout=30)
    acked = [int(line) for line in out.split() if line.isdigit()]
    assert acked, "the writer never got an acknowledgement"
    # Every acknowledged write must be in the file after a graceful stop.
    server.start()
    present = run_deno("count.ts", server.url, token=server.token)
    assert present["count"] >= len(acked)
    assert present["max"] >= max(acked)
