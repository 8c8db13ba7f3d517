"""The `denokv` command line: refusals a user can act on, in plain words."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT
from tests.support.processes import ServerFactory


def denokv(
    *args: str, token: str | None = None, env_vars: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DENO_KV_")}
    if token is not None:
        env["DENO_KV_ACCESS_TOKEN"] = token
    env.update(env_vars or {})
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["serve"], "short", "Access token must be at minimum 12 chars long."),
        (["serve"], None, "--access-token is required"),
        (["serve", "--num-workers", "0"], "x" * 12, "--num-workers must be at least 1"),
        (["serve", "--addr", "4512"], "x" * 12, "invalid --addr '4512': expected HOST:PORT"),
        (["serve", "--addr", "localhost:4512"], "x" * 12, "the host must be an IP address"),
        (["serve", "--s3-bucket", "b", "--s3-prefix", "no-slash"], "x" * 12,
         "--s3-prefix must end with a slash"),
        (["serve", "--sync-from-s3", "--read-only"], "x" * 12, "conflicts with --read-only"),
        (["serve", "--sync-from-s3"], "x" * 12, "--s3-bucket not set"),
        (["serve", "--read-only", "--s3-bucket", "b"], "x" * 12,
         "--read-only cannot ship backups"),
        (["pitr", "restore", "--s3-prefix", "p/"], None, "--s3-bucket not set"),
        (["pitr", "restore", "--s3-bucket", "b", "--at", "tomorrow"], None, "invalid --at"),
    ],
)  # fmt: skip
def test_refusals(tmp_path: Path, args: list[str], token: str | None, message: str) -> None:
    db = tmp_path / "kv.sqlite"
    done = denokv("--sqlite-path", str(db), *args, token=token)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists(), "a refused command must not create the database"


@pytest.mark.parametrize(
    ("variable", "value", "flag"),
    [("DENO_KV_S3_SYNC_INTERVAL", "soon", "--s3-sync-interval"),
     ("DENO_KV_NUM_WORKERS", "many", "--num-workers")],
)  # fmt: skip
def test_a_bad_environment_value_is_a_usage_error_naming_its_flag(
    tmp_path: Path, variable: str, value: str, flag: str
) -> None:
    db = tmp_path / "kv.sqlite"
    done = denokv("--sqlite-path", str(db), "serve", token="x" * 12, env_vars={variable: value})
    assert done.returncode == 2, done.stderr
    assert f"argument {flag}" in done.stderr and value in done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists()
    # Another subcommand does not have the flag, so the variable does not concern it.
    other = denokv("pitr", "--help", env_vars={variable: value})
    assert other.returncode == 0, other.stderr


def test_an_empty_environment_value_counts_as_unset(tmp_path: Path) -> None:
    done = denokv(
        "--sqlite-path", "x", "serve", "--help", env_vars={"DENO_KV_S3_SYNC_INTERVAL": ""}
    )
    assert done.returncode == 0, done.stderr


def test_help_describes_every_command() -> None:
    top = denokv("--help")
    assert top.returncode == 0 and "serve" in top.stdout and "pitr" in top.stdout
    serve = denokv("--sqlite-path", "x", "serve", "--help")
    for flag in ("--access-token", "--addr", "--read-only", "--sync-from-s3", "--s3-bucket",
                 "--metrics-addr", "--http-server", "--atomic-write-batch-timeout-ms"):  # fmt: skip
        assert flag in serve.stdout
    assert "DENO_KV_ACCESS_TOKEN" in serve.stdout


def test_the_token_never_appears_in_logs(server_factory: ServerFactory) -> None:
    srv = server_factory().start()
    srv.stop()
    assert "Listening on http://127.0.0.1:" in srv.logs()
    assert srv.token not in srv.logs()


def _taken_port() -> tuple[socket.socket, int]:
    """A port some other program listens on (no SO_REUSEPORT)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


def test_a_port_another_program_listens_on_is_one_error_line(tmp_path: Path) -> None:
    holder, port = _taken_port()
    with holder:
        db = tmp_path / "kv.sqlite"
        done = denokv("--sqlite-path", str(db), "serve", "--addr", f"127.0.0.1:{port}",
                      token="x" * 12)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port}: the address is in use "
        "(is another server running?)"
    )
    assert not db.exists(), "a refused command must not create the database"


def test_a_second_server_on_the_port_of_a_running_one_is_refused(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # The running server's listeners allow SO_REUSEPORT: without the check the
    # second one would start and take a share of the first one's connections.
    first = server_factory().start()
    other = tmp_path / "other.sqlite"
    done = denokv("--sqlite-path", str(other), "serve", "--addr", f"127.0.0.1:{first.port}",
                  token="x" * 12)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "the address is in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert not other.exists()
    assert httpx.get(first.url + "/healthz", timeout=10).status_code == 200


def test_a_server_restarts_on_its_port_while_old_connections_linger(
    server_factory: ServerFactory,
) -> None:
    # Stopping closes the clients' idle connections from the server's side, which
    # leaves them in TIME_WAIT on the server's port: the check must pass them.
    srv = server_factory().start()
    clients = [httpx.Client(base_url=srv.url, timeout=10) for _ in range(4)]
    for client in clients:
        assert client.get("/healthz").status_code == 200
    srv.stop()
    for client in clients:
        client.close()
    srv.start()
    assert httpx.get(srv.url + "/healthz", timeout=10).status_code == 200


def test_a_taken_metrics_port_is_one_error_line(tmp_path: Path) -> None:
    holder, port = _taken_port()
    with holder:
        done = denokv("--sqlite-path", str(tmp_path / "kv.sqlite"), "serve",
                      "--addr", "127.0.0.1:0", "--metrics-addr", f"127.0.0.1:{port}",
                      token="x" * 12)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"error: cannot serve /metrics on 127.0.0.1:{port}: " in done.stderr
    assert "Traceback" not in done.stderr


def _not_a_database(tmp: Path) -> Path:
    bad = tmp / "garbage.sqlite"
    bad.write_bytes(b"this is not a SQLite file, though it is named like one" * 100)
    return bad


def _other_sqlite_file(tmp: Path) -> Path:
    other = tmp / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("create table notes (body text)")
    conn.close()
    return other


@pytest.mark.parametrize(
    ("make", "args", "says"),
    [
        (_not_a_database, ["serve"], "file is not a database"),
        (_not_a_database, ["serve", "--read-only"], "file is not a database"),
        (_not_a_database, ["pitr", "list"], "file is not a database"),
        (lambda tmp: tmp, ["serve"], "unable to open database file"),
        (lambda tmp: tmp / "missing" / "kv.sqlite", ["serve"], "unable to open database file"),
        (_other_sqlite_file, ["serve", "--read-only"], "not a Deno KV database"),
    ],
)  # fmt: skip
def test_a_file_that_is_no_database_is_one_error_line(
    tmp_path: Path, make: Any, args: list[str], says: str
) -> None:
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    extra = ["--addr", "127.0.0.1:0"] if args[0] == "serve" else []
    done = denokv("--sqlite-path", str(path), *args, *extra, token="x" * 12)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"error: cannot open the database {path}: "), done.stderr
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    if before is not None:
        assert path.read_bytes() == before, "the file was changed"
