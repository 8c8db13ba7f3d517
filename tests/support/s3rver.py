"""The npm `s3rver` package (tests/node) as a child process: a second S3 implementation.

Run under `node --openssl-legacy-provider` (its listing continuation tokens use DES,
which OpenSSL 3 only has in the legacy provider). s3rver IGNORES `If-None-Match` (a
second conditional put silently overwrites), so it is a second implementation for plain
put/get/list, not for conditional-write semantics.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.paths import NODE_DIR
from tests.support.ports import wait_http
from tests.support.processes import stop_process
from tests.support.s3 import s3_env

# Run with cwd=tests/node so `require('s3rver')` resolves there. Registers the test
# credentials on s3rver's dummy account (it only knows S3RVER/S3RVER otherwise), listens
# on an ephemeral port, writes {"port": N} to $S3RVER_PORT_FILE, and exits when stdin
# closes (so it can't outlive the test process) or on SIGTERM.
_S3RVER_JS = r"""
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
AWSAccount.DUMMY_ACCOUNT.createKeyPair(process.env.AWS_ACCESS_KEY_ID,
                                       process.env.AWS_SECRET_ACCESS_KEY);
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory: process.env.S3RVER_DIR,
  silent: process.env.S3RVER_SILENT === '1',
  vhostBuckets: false,
});
server.run().then(({ port }) => {
  const fs = require('fs');
  const file = process.env.S3RVER_PORT_FILE;
  fs.writeFileSync(file + '.tmp', JSON.stringify({ port }));
  fs.renameSync(file + '.tmp', file);
}, (err) => { console.error(err); process.exit(1); });
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
"""


def s3rver_available() -> bool:
    return (
        shutil.which("node") is not None
        and (NODE_DIR / "node_modules" / "s3rver" / "package.json").exists()
    )


class S3rver:
    """The npm `s3rver` (tests/node/node_modules) as a child process on an ephemeral port.

    Gotchas: needs `node --openssl-legacy-provider` (paged listings encrypt their
    continuation token with DES); ignores If-None-Match / If-Match on PutObject; accepts
    SigV4 from the test credentials only because we register them at start-up.
    """

    def __init__(self, directory: Path | None = None, log_path: Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="s3rver-")
            directory = Path(self._tmp.name)
        self.directory = directory
        self.log_path = log_path
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> S3rver:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        port_file = self.directory.parent / f".{self.directory.name}.port"
        port_file.unlink(missing_ok=True)
        env = s3_env()
        env["S3RVER_DIR"] = str(self.directory)
        env["S3RVER_PORT_FILE"] = str(port_file)
        env["S3RVER_SILENT"] = "0" if self.log_path else "1"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [node, "--openssl-legacy-provider", "-e", _S3RVER_JS],
                cwd=NODE_DIR,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            if not isinstance(log, int):  # a file of ours, not subprocess.DEVNULL
                log.close()
        try:
            self.port = self._read_port(port_file, timeout)
            wait_http(self.endpoint + "/", self.proc, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, port_file: Path, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3rver exited with {self.proc.returncode}: {self.logs()}")
            if port_file.exists():
                port = int(json.loads(port_file.read_text())["port"])
                port_file.unlink(missing_ok=True)
                return port
            time.sleep(0.05)
        raise TimeoutError(f"s3rver did not report its port within {timeout}s: {self.logs()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def __enter__(self) -> S3rver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
