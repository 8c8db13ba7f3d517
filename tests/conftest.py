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
from collections.abc import Iterable, Iterator
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


# -- markers that stay honest ---------------------------------------------------------
# `make test-fast` deselects the tests marked deno, node, s3, chart, browser and slow and
# must then need none of those programs. Two checks keep the markers true: fixtures that
# start one (known by name) need the marker at collection time, and every program a test
# starts by whatever path (fixture, helper, subprocess call) is checked as it starts.

FIXTURE_MARKERS: dict[str, frozenset[str]] = {
    "moto_s3": frozenset({"s3"}),
    "s3_bucket": frozenset({"s3"}),
    "fault_proxy": frozenset({"s3"}),
    "s3rver_server": frozenset({"s3", "node"}),
    "s3rver_s3": frozenset({"s3", "node"}),
    "auth_moto": frozenset({"s3"}),  # tests/test_cli_s3.py: a moto that checks credentials
}
_PROGRAM_MARKERS = {
    "deno": "deno",
    "node": "node",
    "npm": "node",
    "npx": "node",
    "chromedriver": "browser",
    "chromium": "browser",
    "checkov": "chart",
}
_SHELLS = ("sh", "bash", "dash")


def program_markers(executable: object, args: object) -> set[str]:
    """The markers a test needs to start this program (`subprocess.Popen`'s audit event)."""
    argv = [os.fsdecode(a) for a in args] if isinstance(args, list) else []  # always a list
    first = os.fsdecode(executable) if isinstance(executable, str | bytes | os.PathLike) else ""
    if Path(first).name in _SHELLS and len(argv) >= 3 and argv[1] == "-c":
        words = argv[2].split()
        first, argv = (words[0] if words else ""), words
    needed = set()
    if Path(first).name in _PROGRAM_MARKERS:
        needed.add(_PROGRAM_MARKERS[Path(first).name])
    if "moto.server" in argv or Path(first).name == "moto_server":
        needed.add("s3")
    if "node" in needed and any("s3rver" in a for a in argv):
        needed.add("s3")
    return needed


def item_markers(item: pytest.Item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


_running: list[pytest.Item] = []  # the test whose setup, call or teardown runs now
_audit_installed = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "subprocess.Popen" or not _running:
        return
    item = _running[-1]
    missing = program_markers(args[0], args[1]) - item_markers(item)
    if missing:
        marks = ", ".join(f"@pytest.mark.{m}" for m in sorted(missing))
        pytest.fail(f"{item.nodeid} starts {args[1]!r} but lacks {marks}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    global _audit_installed
    if not _audit_installed:  # an audit hook stays for the life of the process
        sys.addaudithook(_audit)
        _audit_installed = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.remove(item)


def fixture_markers(fixturenames: Iterable[str]) -> set[str]:
    needed: set[str] = set()
    for name in fixturenames:
        needed |= FIXTURE_MARKERS.get(name, frozenset())
    return needed


def fixture_marker_problems(items: list[pytest.Item]) -> list[str]:
    """One line per test that asks for a fixture of FIXTURE_MARKERS without its markers."""
    problems = []
    for item in items:
        missing = fixture_markers(getattr(item, "fixturenames", ())) - item_markers(item)
        if missing:
            problems.append(f"{item.nodeid}: needs {', '.join(sorted(missing))}")
    return problems


@pytest.fixture(autouse=True)
def _fixtures_match_markers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test: the fixtures it took with `getfixturevalue` need their markers too."""
    yield
    missing = fixture_markers(request.fixturenames) - item_markers(request.node)
    if missing:
        marks = ", ".join(f"@pytest.mark.{m}" for m in sorted(missing))
        pytest.fail(f"{request.node.nodeid} uses a fixture that needs {marks}", pytrace=False)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems = fixture_marker_problems(items)
    if problems:
        raise pytest.UsageError(
            "tests without the markers their fixtures need:\n" + "\n".join(problems)
        )
