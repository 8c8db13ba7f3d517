"""Child processes, CPU accounting and the simulated slow disk, shared by the benchmarks.

The benchmarks start real servers and real Deno clients as child processes
and need the same few things around them: ports, a registry of children that
are all stopped on exit, the CPU a server used (summed over its whole process
tree, since `denokv serve --processes N` runs N processes), the machine's load,
and optionally a slower disk for every child: the `tests/native/fsync_shim.c`
LD_PRELOAD shim, built once per run and handed to every child (servers, their
worker processes, which inherit the environment, and the Deno clients and
Deno's in-process engine alike).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port

FSYNC_SHIM_SOURCE = ROOT / "tests" / "native" / "fsync_shim.c"

# Environment added to every child process (the slow-disk shim, when chosen).
_child_env: dict[str, str] = {}


# -- the simulated disk -----------------------------------------------------------


def use_fsync_delay(delay_ms: float, work: Path) -> Path | None:
    """Build the fsync shim into `work` and put every later child process under it.

    Returns the shim's path, or None for `delay_ms` 0 (the real disk). Every
    fsync and fdatasync of every child then sleeps `delay_ms` first.
    """
    _child_env.clear()
    if delay_ms <= 0:
        return None
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("--fsync-delay-ms needs a C compiler (cc); apt-get install -y gcc")
    shim = work / "fsync_shim.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(FSYNC_SHIM_SOURCE), "-ldl"],
        check=True,
    )
    _child_env["LD_PRELOAD"] = str(shim)
    _child_env["DENOKV_FSYNC_DELAY_US"] = str(round(delay_ms * 1000))
    return shim


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **_child_env, **extra}


def has_library(pid: int, path: Path | None) -> bool | None:
    """Whether process `pid` has the shared library `path` mapped (None: unknown)."""
    if path is None:
        return None
    try:
        return str(path) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


# -- processes --------------------------------------------------------------------


def listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:`port` (one per SO_REUSEPORT process)."""
    wanted = f"0100007F:{port:04X}"
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for r in rows if r.split()[1] == wanted and r.split()[3] == "0A")


def wait_for_listeners(
    port: int, count: int, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """Wait until `count` processes listen on `port` (a server's workers are up)."""
    deadline = time.monotonic() + timeout
    while listeners(port) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{listeners(port)} of {count} listeners on port {port}")
        time.sleep(0.1)


def deno_binary() -> str:
    found = shutil.which("deno", path=str(Path(sys.executable).parent)) or shutil.which("deno")
    if not found:
        raise SystemExit("the deno CLI is not installed; run `make install`")
    return found


def deno_env(token: str) -> dict[str, str]:
    return child_env(
        DENO_DIR=str(ROOT / ".cache" / "deno"),
        DENO_NO_UPDATE_CHECK="1",
        DENO_KV_ACCESS_TOKEN=token,
        NO_COLOR="1",
    )


class Children:
    """Every child process started here; `stop_all` ends whichever are still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=10)


def run_deno_json(
    children: Children, script: Path, config: dict[str, Any], token: str, timeout: float
) -> dict[str, Any]:
    """Run one Deno script to completion and return the JSON object it printed."""
    return wait_deno_json(children, start_deno(children, script, config, token), timeout)


def start_deno(
    children: Children, script: Path, config: dict[str, Any], token: str
) -> subprocess.Popen[bytes]:
    cmd = [deno_binary(), "run", "--unstable-kv", "-A", str(script), json.dumps(config)]
    return children.popen(
        cmd, cwd=ROOT, env=deno_env(token), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_deno_json(
    children: Children, proc: subprocess.Popen[bytes], timeout: float
) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        children.stop(proc, timeout=5)
        raise RuntimeError(f"deno client timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"deno client failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}"
        )
    lines = [ln for ln in out.decode().splitlines() if ln.strip()]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- CPU --------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds; NaN when unavailable."""
    fields = _stat_fields(pid)
    if fields is None:
        return math.nan
    try:
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return math.nan


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, ()))
    return found


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of `root` and of each live descendant, by pid."""
    return {pid: cpu_seconds(pid) for pid in process_tree(root)}


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs from /proc/stat; NaNs when unavailable."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return math.nan, math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def background_load(seconds: float = 1.0) -> float:
    """Whole-machine CPU use (percent of one CPU) while this benchmark is still idle."""
    b0, t0 = machine_busy()
    time.sleep(seconds)
    b1, t1 = machine_busy()
    return 100 * (os.cpu_count() or 1) * (b1 - b0) / (t1 - t0) if t1 > t0 else math.nan


class CpuWindow:
    """Server CPU (its whole process tree) and whole-machine CPU between `start` and `stop`.

    `extra` pids (a load generator, say) are measured beside it.
    """

    def __init__(self, server: Server | None, extra: dict[str, int] | None = None) -> None:
        self.server = server
        self.extra = extra or {}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.srv0 = self.server.cpu_by_process() if self.server else {}
        self.extra0 = {name: cpu_seconds(pid) for name, pid in self.extra.items()}
        self.m0 = machine_busy()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        srv1 = self.server.cpu_by_process() if self.server else {}
        m1 = machine_busy()
        # A process started inside the window counts from 0; one that ended in it is missed.
        per = {pid: srv1.get(pid, self.srv0.get(pid, 0.0)) - self.srv0.get(pid, 0.0)
               for pid in {*self.srv0, *srv1}}  # fmt: skip
        srv = sum(per.values()) if self.server else math.nan
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        ncpu = os.cpu_count() or 1
        out: dict[str, Any] = {
            "wall_s": wall,
            "server_cpu_s": srv,
            "server_cpu_pct": 100 * srv / wall,
            "server_cpu_pct_by_process": sorted(
                (100 * v / wall for v in per.values()), reverse=True
            ),
            "server_processes": len(per),
            "machine_cpu_pct": 100 * ncpu * busy / total if total else math.nan,
            "machine_cpus": ncpu,
        }
        for name, pid in self.extra.items():
            out[f"{name}_cpu_s"] = cpu_seconds(pid) - self.extra0[name]
        return out


class Server:
    """A `denokv serve` (or the trivial app) child process on 127.0.0.1.

    `processes` is how many processes will listen on the port once it is up
    (the main one and its workers); the constructor waits for all of them.
    """

    def __init__(
        self,
        children: Children,
        cmd: list[str],
        port: int,
        token: str,
        log: Path,
        processes: int = 1,
    ):
        self.children = children
        self.port = port
        self.log = log
        with open(log, "ab") as fh:
            self.proc = children.popen(
                cmd,
                cwd=ROOT,
                env=child_env(DENO_KV_ACCESS_TOKEN=token),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port, self.proc)
        wait_for_listeners(port, processes, self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        return tree_cpu(self.proc.pid)

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> int:
        return self.children.stop(self.proc)

    def log_problems(self) -> list[str]:
        text = self.log.read_text(errors="replace")
        keys = ("ERROR", "Traceback", "CRITICAL", "WARNING", "Exception")
        benign = ("Embedded server is experimental",)  # granian's notice for embedded mode
        return [
            ln for ln in text.splitlines()
            if any(k in ln for k in keys) and not any(b in ln for b in benign)
        ][:20]  # fmt: skip


def start_denokv(
    children: Children,
    db: Path,
    token: str,
    http_server: str,
    extra: list[str],
    processes: int | None = None,
) -> Server:
    """`denokv serve` on a free port; `processes` None leaves the server's default."""
    port = free_port()
    if processes is None and http_server != "granian":
        processes = 1  # the only count it serves; spares the server's warning about it
    count = ["--processes", str(processes)] if processes is not None else []
    cmd = [
        sys.executable, "-m", "cli.main", "--sqlite-path", str(db), "serve",
        "--addr", f"127.0.0.1:{port}", "--http-server", http_server, *count, *extra,
    ]  # fmt: skip
    expected = expected_processes(http_server, processes)
    return Server(children, cmd, port, token, db.with_suffix(".log"), processes=expected)


def expected_processes(http_server: str, processes: int | None) -> int:
    """How many processes `denokv serve` runs for these flags (see cli/serve.py)."""
    if http_server != "granian":
        return 1
    if processes is None:
        from denokv.server.processes import default_processes

        return default_processes()
    return processes


def add_wait_quiet_option(p: argparse.ArgumentParser) -> None:
    """`--wait-quiet SECONDS`, for `wait_for_quiet` before the first measurement."""
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to this long for the machine's CPU use to drop "
                   "below 15 %% of one CPU")  # fmt: skip


def wait_for_quiet(max_wait_s: float, threshold_pct: float = 15.0) -> float:
    """Wait (at most `max_wait_s`) until the machine's CPU use over 3 s is below the
    threshold (percent of one CPU); returns the last figure measured."""
    deadline = time.monotonic() + max_wait_s
    load = background_load(3.0)
    while load > threshold_pct and time.monotonic() < deadline:
        time.sleep(5)
        load = background_load(3.0)
    return load
