"""Child processes of the tests: `denokv serve` on 127.0.0.1, and stopping any child."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port


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


class ServerFactory(Protocol):
    """The `server_factory` fixture: a `ServerProcess` not yet started, its database a
    fresh file in the test's tmp_path unless `db_path` is given; the fixture stops every
    server it made."""

    def __call__(
        self,
        *,
        db_path: Path = ...,
        token: str = ...,
        port: int = ...,
        extra_args: list[str] = ...,
        http_server: str = ...,
        env: dict[str, str] = ...,
    ) -> ServerProcess: ...


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
