"""Shared fixtures: real `denokv` server processes on 127.0.0.1 and the real Deno CLI."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


@dataclass
class ServerProcess:
    """A `denokv serve` child process; `start`/`stop` can be called again to restart it."""

    db_path: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    http_server: str = "granian"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "cli.main", "--sqlite-path", str(self.db_path),
            "serve", "--addr", f"127.0.0.1:{self.port}", "--http-server", self.http_server,
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> ServerProcess:
        env = {**os.environ, **self.env, "DENO_KV_ACCESS_TOKEN": self.token}
        self.log_path = self.db_path.with_suffix(".log")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_for_port(self.port, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "kv.sqlite").start()
    yield srv
    srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type]:
    started: list[ServerProcess] = []

    def make(**kwargs: object) -> ServerProcess:
        kwargs.setdefault("db_path", tmp_path / f"kv{len(started)}.sqlite")
        srv = ServerProcess(**kwargs)  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield make  # type: ignore[misc]
    for srv in started:
        if srv.proc is not None:
            srv.stop()


def deno_binary() -> str:
    found = shutil.which("deno", path=str(Path(sys.executable).parent)) or shutil.which("deno")
    if not found:
        raise RuntimeError("the deno CLI is not installed; run `make install`")
    return found


def deno_env(token: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DENO_DIR": str(CACHE / "deno"),
        "DENO_NO_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
    }
    if token is not None:
        env["DENO_KV_ACCESS_TOKEN"] = token
    return env


DENO_SCRIPTS = ROOT / "tests" / "deno"


def run_deno(script: str, *args: str, token: str | None = None, timeout: float = 120) -> object:
    """Run tests/deno/<script> with the real Deno CLI; return the JSON it printed last."""
    import json

    proc = subprocess.run(
        [deno_binary(), "run", "--unstable-kv", "-A", str(DENO_SCRIPTS / script), *args],
        env=deno_env(token),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"deno {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
