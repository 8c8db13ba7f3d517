"""moto's S3 server as a child process on 127.0.0.1 (moto 5.2.5, pinned).

moto enforces conditional writes: `PutObject` with `IfNoneMatch='*'` on an existing key
answers 412 `PreconditionFailed`, so it stands in for S3 in the lease and lineage tests.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.ports import free_port, wait_http
from tests.support.processes import stop_process
from tests.support.s3 import s3_env


class MotoServer:
    """`python -m moto.server -H 127.0.0.1 -p PORT` as a child process (moto 5.2.5).

    (The `moto_server` console script is the same entry point.) Readiness is polled with
    a plain GET / (ListBuckets), which moto answers without authentication; the import
    takes ~2 s. All state is in memory; `reset()` wipes it.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> MotoServer:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                cmd, env=s3_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            if not isinstance(log, int):  # a file of ours, not subprocess.DEVNULL
                log.close()
        try:
            wait_http(self.endpoint + "/", self.proc, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def reset(self) -> None:
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        stop_process(self.proc)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
