"""Bank-transfer benchmark: the denokv server vs Deno's in-process KV engine.

    .venv/bin/python bench/bank.py [--seconds 10] [--readers 2] [--writers 2]
        [--concurrency 8] [--accounts 10000] [--skip-baseline]
        [--http-server granian|hypercorn]

Workload (after upstream denokv's bank benchmark): `--accounts` keys
["account", i] holding a number balance, all starting at the same amount.
Reader processes `kv.get` random accounts in a loop; writer processes each
`getMany` two distinct random accounts, then commit an atomic that checks both
entries and moves a random amount from one to the other. A failed check is a
conflict (counted, not retried). Each client is a real `deno` process with
`--concurrency` async loops, and every process measures the same wall-clock
window. At the end the sum of all balances must equal accounts * initial.

Phases, all in one run:

1. denokv server: `--readers` + `--writers` Deno processes against
   `http://127.0.0.1:PORT` (KV Connect over h2c).
2. Deno in-process baseline: ONE Deno process with the same total number of
   loops (readers*concurrency reader loops + writers*concurrency writer loops)
   on `Deno.openKv(<sqlite file>)`. Deno's local engine belongs to one process;
   several processes opening one file would contend on SQLite's file lock and
   busy-retry loop, which is neither how Deno KV is meant to be shared nor a
   fair stand-in for a server.
3. HTTP overhead: the same Deno fetch loader posts the same snapshot_read
   protobuf bodies to the server's /v2/snapshot_read and to a trivial ASGI app
   (bench/trivial_app.py) on the same HTTP server stack, over HTTP/1.1 and h2c.

Exit status 1 if a balance check fails or a client reports errors.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from denokv.keys import KvNumber, encode_key  # noqa: E402
from denokv.proto import datapath_pb2 as pb  # noqa: E402

BENCH = ROOT / "bench"
BANK_CLIENT = BENCH / "bank_client.ts"
HTTP_LOAD = BENCH / "http_load.ts"
TRIVIAL_APP = BENCH / "trivial_app.py"
INITIAL = 1000
LOG_BASE = 1.02
START_DELAY_S = 4.0  # time for every client process to start and connect
CLIENT_SLACK_S = 90.0  # subprocess timeout beyond the measured window
SERVER_CPU = "server CPU"


# -- processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


def deno_binary() -> str:
    found = shutil.which("deno", path=str(Path(sys.executable).parent)) or shutil.which("deno")
    if not found:
        raise SystemExit("the deno CLI is not installed; run `make install`")
    return found


def deno_env(token: str) -> dict[str, str]:
    return {
        **os.environ,
        "DENO_DIR": str(ROOT / ".cache" / "deno"),
        "DENO_NO_UPDATE_CHECK": "1",
        "DENO_KV_ACCESS_TOKEN": token,
        "NO_COLOR": "1",
    }


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
    return json.loads(lines[-1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds; NaN when unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


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
    """Server process CPU and whole-machine CPU between `start()` and `stop()`."""

    def __init__(self, server: Server | None) -> None:
        self.server = server

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.srv0 = self.server.cpu() if self.server else math.nan
        self.m0 = machine_busy()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        srv = (self.server.cpu() if self.server else math.nan) - self.srv0
        m1 = machine_busy()
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        ncpu = os.cpu_count() or 1
        return {
            "server_cpu_s": srv,
            "server_cpu_pct": 100 * srv / wall,
            "machine_cpu_pct": 100 * ncpu * busy / total if total else math.nan,
            "machine_cpus": ncpu,
        }


class Server:
    """A `denokv serve` (or the trivial app) child process on 127.0.0.1."""

    def __init__(self, children: Children, cmd: list[str], port: int, token: str, log: Path):
        self.children = children
        self.port = port
        self.log = log
        with open(log, "ab") as fh:
            self.proc = children.popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, "DENO_KV_ACCESS_TOKEN": token},
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port, self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

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
    children: Children, db: Path, token: str, http_server: str, extra: list[str]
) -> Server:
    port = free_port()
    cmd = [
        sys.executable, "-m", "cli.main", "--sqlite-path", str(db), "serve",
        "--addr", f"127.0.0.1:{port}", "--http-server", http_server, *extra,
    ]  # fmt: skip
    return Server(children, cmd, port, token, db.with_suffix(".log"))


# -- histograms ---------------------------------------------------------------------


def merge_hist(parts: list[dict[str, Any]]) -> dict[str, Any]:
    buckets: dict[int, int] = {}
    count = 0
    total = 0.0
    top = 0.0
    for h in parts:
        count += h["count"]
        total += h["sum_us"]
        top = max(top, h["max_us"])
        for b, n in h["buckets"].items():
            buckets[int(b)] = buckets.get(int(b), 0) + n
    return {"count": count, "sum_us": total, "max_us": top, "buckets": buckets}


def percentile_ms(h: dict[str, Any], p: float) -> float:
    """The p-quantile in ms, to the bucket's geometric middle (±1 %)."""
    if h["count"] == 0:
        return math.nan
    rank = p * h["count"]
    seen = 0
    for b in sorted(h["buckets"]):
        seen += h["buckets"][b]
        if seen >= rank:
            return LOG_BASE ** (b + 0.5) / 1000
    return h["max_us"] / 1000


# -- the bank workload --------------------------------------------------------------


def bank_phase(
    children: Children,
    target: str,
    token: str,
    groups: list[tuple[int, int]],
    args: argparse.Namespace,
    server: Server | None = None,
) -> dict[str, Any]:
    """Run one Deno process per (reader loops, writer loops) group, all in one window."""
    start_at = int((time.time() + START_DELAY_S + 0.5 * len(groups)) * 1000)
    procs = []
    for readers, writers in groups:
        config = {
            "mode": "run", "target": target, "accounts": args.accounts, "readers": readers,
            "writers": writers, "seconds": args.seconds, "startAt": start_at,
        }  # fmt: skip
        procs.append(start_deno(children, BANK_CLIENT, config, token))
    window = CpuWindow(server)
    time.sleep(max(0.0, start_at / 1000 - time.time()))
    window.start()
    time.sleep(args.seconds)
    cpu = window.stop()
    results = []
    timeout = START_DELAY_S + 0.5 * len(groups) + args.seconds + CLIENT_SLACK_S
    for proc in procs:
        results.append(wait_deno_json(children, proc, timeout))
    return {**summarize(results, args.seconds), **cpu}


def summarize(results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    elapsed = max(r["elapsed_s"] for r in results) or seconds
    reads = sum(r["reads"] for r in results)
    transfers = sum(r["transfers"] for r in results)
    conflicts = sum(r["conflicts"] for r in results)
    rl = merge_hist([r["read_latency"] for r in results])
    tl = merge_hist([r["transfer_latency"] for r in results])
    return {
        "elapsed_s": elapsed,
        "late_ms": max(r["late_ms"] for r in results),
        "reads": reads,
        "reads_per_s": reads / elapsed,
        "read_misses": sum(r["read_misses"] for r in results),
        "transfers": transfers,
        "transfers_per_s": transfers / elapsed,
        "conflicts": conflicts,
        "conflict_rate": conflicts / max(1, transfers + conflicts),
        "errors": sum(r["errors"] for r in results),
        "error_samples": [s for r in results for s in r["error_samples"]][:10],
        "read_p50_ms": percentile_ms(rl, 0.50),
        "read_p99_ms": percentile_ms(rl, 0.99),
        "transfer_p50_ms": percentile_ms(tl, 0.50),
        "transfer_p99_ms": percentile_ms(tl, 0.99),
    }


def check_balance(verify: dict[str, Any], accounts: int) -> bool:
    return (
        verify["count"] == accounts and verify["bad"] == 0 and verify["sum"] == accounts * INITIAL
    )


def run_server_side(children: Children, work: Path, token: str, args: argparse.Namespace):
    db = work / "server.sqlite"
    server = start_denokv(children, db, token, args.http_server, args.server_arg)
    info: dict[str, Any] = {"server_log": str(server.log)}
    try:
        init = {"mode": "init", "target": server.url, "accounts": args.accounts,
                "initial": INITIAL}  # fmt: skip
        run_deno_json(children, BANK_CLIENT, init, token, 120)
        groups = [(args.concurrency, 0)] * args.readers + [(0, args.concurrency)] * args.writers
        result = bank_phase(children, server.url, token, groups, args, server)
        verify = {"mode": "verify", "target": server.url, "accounts": args.accounts}
        info["verify_via_server"] = run_deno_json(children, BANK_CLIENT, verify, token, 120)
    finally:
        status = server.stop()
        info["server_exit"] = status
        info["server_log_problems"] = server.log_problems()
    # The file the server wrote must also be readable by Deno's own engine.
    verify_file = {"mode": "verify", "target": str(db), "accounts": args.accounts}
    info["verify_via_file"] = run_deno_json(children, BANK_CLIENT, verify_file, token, 120)
    result["balance_ok"] = check_balance(info["verify_via_server"], args.accounts) and (
        check_balance(info["verify_via_file"], args.accounts)
    )
    result.update(info)
    return result


def run_baseline(children: Children, work: Path, token: str, args: argparse.Namespace):
    db = work / "inprocess.sqlite"
    init = {"mode": "init", "target": str(db), "accounts": args.accounts, "initial": INITIAL}
    run_deno_json(children, BANK_CLIENT, init, token, 120)
    groups = [(args.readers * args.concurrency, args.writers * args.concurrency)]
    result = bank_phase(children, str(db), token, groups, args)
    verify = {"mode": "verify", "target": str(db), "accounts": args.accounts}
    result["verify_via_file"] = run_deno_json(children, BANK_CLIENT, verify, token, 120)
    result["balance_ok"] = check_balance(result["verify_via_file"], args.accounts)
    return result


# -- raw HTTP: snapshot_read vs a trivial endpoint -------------------------------------


def snapshot_read_bodies(accounts: int, n: int = 256) -> list[str]:
    bodies = []
    for i in range(n):
        key = encode_key(("account", KvNumber(float(i * accounts // n))))
        msg = pb.SnapshotRead(ranges=[pb.ReadRange(start=key, end=key + b"\x00", limit=1)])
        bodies.append(base64.b64encode(msg.SerializeToString()).decode())
    return bodies


def run_http_compare(children: Children, work: Path, token: str, args: argparse.Namespace):
    headers = {
        "authorization": f"Bearer {token}",
        "x-denokv-version": "3",
        "x-denokv-database-id": "00000000-0000-0000-0000-000000000000",
        "content-type": "application/x-protobuf",
    }
    bodies = snapshot_read_bodies(args.accounts)
    db = work / "http.sqlite"
    out: dict[str, Any] = {}
    kv = start_denokv(children, db, token, args.http_server, args.server_arg)
    try:
        init = {"mode": "init", "target": kv.url, "accounts": args.accounts, "initial": INITIAL}
        run_deno_json(children, BANK_CLIENT, init, token, 120)
        for proto in ("http1", "h2c"):
            out[f"denokv {proto}"] = http_load(
                children, kv, f"{kv.url}/v2/snapshot_read", headers, bodies, proto, token, args
            )
    finally:
        kv.stop()
        out["denokv_log_problems"] = kv.log_problems()
    port = free_port()
    cmd = [sys.executable, str(TRIVIAL_APP), "--addr", f"127.0.0.1:{port}",
           "--http-server", args.http_server]  # fmt: skip
    trivial = Server(children, cmd, port, token, work / "trivial.log")
    try:
        for proto in ("http1", "h2c"):
            out[f"trivial {proto}"] = http_load(
                children,
                trivial,
                f"{trivial.url}/v2/snapshot_read",
                headers,
                bodies,
                proto,
                token,
                args,
            )
    finally:
        trivial.stop()
    return out


def http_load(
    children: Children,
    server: Server,
    url: str,
    headers: dict[str, str],
    bodies: list[str],
    proto: str,
    token: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """`--http-loaders` loader processes sharing `--http-concurrency`, one window."""
    n = args.http_loaders
    start_at = int((time.time() + 2.5 + 0.5 * n) * 1000)
    procs = []
    for i in range(n):
        share = args.http_concurrency // n + (1 if i < args.http_concurrency % n else 0)
        config = {
            "url": url, "headers": headers, "bodies": bodies, "seconds": args.http_seconds,
            "concurrency": max(1, share), "startAt": start_at, "http2": proto == "h2c",
        }  # fmt: skip
        procs.append(start_deno(children, HTTP_LOAD, config, token))
    window = CpuWindow(server)
    time.sleep(max(0.0, start_at / 1000 - time.time()))
    window.start()
    time.sleep(args.http_seconds)
    cpu = window.stop()
    parts = [wait_deno_json(children, p, args.http_seconds + CLIENT_SLACK_S) for p in procs]
    elapsed = max(r["elapsed_s"] for r in parts)
    statuses: dict[str, int] = {}
    for r in parts:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    ok = sum(r["ok"] for r in parts)
    requests = sum(r["requests"] for r in parts)
    lat = merge_hist([r["latency"] for r in parts])
    in_window = ok / elapsed * args.http_seconds  # requests served inside the CPU window
    return {
        "elapsed_s": elapsed,
        "requests": requests,
        "ok": ok,
        "rps": ok / elapsed,
        "statuses": statuses,
        "errors": sum(r["errors"] for r in parts),
        "error_samples": [s for r in parts for s in r["error_samples"]][:10],
        "avg_body_bytes": sum(r["body_bytes"] for r in parts) / max(1, requests),
        "p50_ms": percentile_ms(lat, 0.50),
        "p99_ms": percentile_ms(lat, 0.99),
        **cpu,
        "server_cpu_us_per_req": 1e6 * cpu["server_cpu_s"] / max(1.0, in_window),
    }


# -- report -----------------------------------------------------------------------------


def fmt(v: float, unit: str = "") -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "%":
        return f"{v:.0f} %"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"
    return f"{v:,}"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def bank_table(srv: dict[str, Any], base: dict[str, Any] | None) -> str:
    rows = [["metric", "denokv server", "Deno in-process", "ratio", "target"]]

    def row(name: str, key: str, unit: str = "", target: float | None = None, lower=False):
        a = srv[key]
        b = base[key] if base else math.nan
        r = ratio(a, b) if base else math.nan
        rs = "n/a" if math.isnan(r) else f"{r:.2f}x"
        t = ""
        if target is not None:
            met = not math.isnan(r) and r >= target
            t = f">= {target:.1f}x " + ("(met)" if met else "(NOT met)")
        rows.append([name, fmt(a, unit), fmt(b, unit), rs, t])

    row("reads/s", "reads_per_s", target=0.5)
    row("transfers/s (ok)", "transfers_per_s", target=1.0)
    row("conflicts", "conflicts")
    row("errors", "errors")
    row("read p50", "read_p50_ms", "ms")
    row("read p99", "read_p99_ms", "ms")
    row("transfer p50", "transfer_p50_ms", "ms")
    row("transfer p99", "transfer_p99_ms", "ms")
    rows.append(["server process CPU", fmt(srv["server_cpu_pct"], "%"), "-", "", ""])
    rows.append([
        f"machine CPU (of {srv['machine_cpus'] * 100} %)", fmt(srv["machine_cpu_pct"], "%"),
        fmt(base["machine_cpu_pct"], "%") if base else "n/a", "", "",
    ])  # fmt: skip
    rows.append([
        "balance sum conserved",
        "yes" if srv["balance_ok"] else "NO",
        ("yes" if base["balance_ok"] else "NO") if base else "n/a",
        "", "",
    ])  # fmt: skip
    return table(rows)


def http_table(h: dict[str, Any]) -> str:
    rows = [["endpoint", "req/s", "p50", "p99", "server CPU", "CPU/req", "machine CPU",
             "statuses", "ratio", "target"]]  # fmt: skip
    for proto in ("http1", "h2c"):
        kv, tr = h[f"denokv {proto}"], h[f"trivial {proto}"]
        r = ratio(kv["rps"], tr["rps"])
        for name, d in ((f"denokv snapshot_read {proto}", kv), (f"trivial ASGI {proto}", tr)):
            mine = d is kv
            if not mine:
                target = ""
            elif proto == "http1":
                target = ">= 0.5x " + ("(met)" if r >= 0.5 else "(NOT met)")
            else:
                target = "info only (see README)"
            rows.append([
                name, fmt(d["rps"]), fmt(d["p50_ms"], "ms"), fmt(d["p99_ms"], "ms"),
                fmt(d["server_cpu_pct"], "%"), f"{d['server_cpu_us_per_req']:.0f} us",
                fmt(d["machine_cpu_pct"], "%"),
                " ".join(f"{k}:{v}" for k, v in d["statuses"].items())
                + (f" err:{d['errors']}" if d["errors"] else ""),
                f"{r:.2f}x" if mine else "", target,
            ])  # fmt: skip
    return table(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10, help="measured window per phase")
    p.add_argument("--readers", type=int, default=2, help="reader processes")
    p.add_argument("--writers", type=int, default=2, help="writer processes")
    p.add_argument("--concurrency", type=int, default=8, help="async loops per process")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--skip-baseline", action="store_true", help="skip Deno's in-process run")
    p.add_argument("--skip-http", action="store_true", help="skip the raw HTTP comparison")
    p.add_argument("--http-server", choices=("granian", "hypercorn"), default="granian")
    p.add_argument("--http-seconds", type=float, default=5, help="window per raw HTTP run")
    p.add_argument("--http-concurrency", type=int, default=64,
                   help="concurrent requests, over all loaders")  # fmt: skip
    p.add_argument("--http-loaders", type=int, default=1, help="loader processes")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra argument for `denokv serve` (repeatable), e.g. "
                   "--server-arg=--num-workers=2")  # fmt: skip
    p.add_argument("--json-out", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if args.accounts < 2:
        p.error("--accounts must be at least 2")

    # SIGTERM ends the run like Ctrl-C: the `finally` below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    background = background_load()
    token = secrets.token_urlsafe(18)
    work = Path(tempfile.mkdtemp(prefix="denokv-bench-"))
    children = Children()
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    report["background_cpu_pct"] = background
    t0 = time.monotonic()
    try:
        total_r, total_w = args.readers * args.concurrency, args.writers * args.concurrency
        print(f"bank: {args.accounts} accounts, {args.readers} reader + {args.writers} writer "
              f"processes x {args.concurrency} loops, {args.seconds:g} s, "
              f"server --http-server {args.http_server} {' '.join(args.server_arg)}; "
              f"background CPU {background:.0f} %",
              flush=True)  # fmt: skip
        srv = run_server_side(children, work, token, args)
        report["server"] = srv
        print(f"  denokv server done: {srv['reads_per_s']:,.0f} reads/s, "
              f"{srv['transfers_per_s']:,.0f} transfers/s", flush=True)  # fmt: skip
        base = None
        if not args.skip_baseline:
            print(f"  baseline: 1 Deno process, {total_r} reader + {total_w} writer loops, "
                  "Deno.openKv(<file>)", flush=True)  # fmt: skip
            base = run_baseline(children, work, token, args)
            report["baseline"] = base
        if not args.skip_http:
            print(f"  raw HTTP: {args.http_concurrency} concurrent POSTs, "
                  f"{args.http_seconds:g} s per run", flush=True)  # fmt: skip
            report["http"] = run_http_compare(children, work, token, args)
    finally:
        children.stop_all()
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2, default=str))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(bank_table(srv, base))
    print()
    if "http" in report:
        print(http_table(report["http"]))
        print()
    problems = []
    for name, res in (("denokv server", srv), ("in-process", base)):
        if res is None:
            continue
        if not res["balance_ok"]:
            problems.append(f"{name}: balance check failed: {res.get('verify_via_server')} "
                            f"{res.get('verify_via_file')}")  # fmt: skip
        if res["errors"]:
            problems.append(f"{name}: {res['errors']} client errors, e.g. {res['error_samples']}")
        if res["read_misses"]:
            problems.append(f"{name}: {res['read_misses']} reads found no account")
    for name in ("server_log_problems",):
        if srv.get(name):
            problems.append(f"denokv server log: {srv[name]}")
    if srv.get("server_exit") not in (0, None):
        problems.append(f"denokv server exited with status {srv['server_exit']}")
    if "http" in report:
        for k, d in report["http"].items():
            if isinstance(d, dict) and (d["errors"] or set(d["statuses"]) - {"200"}):
                problems.append(f"raw HTTP {k}: statuses {d['statuses']}, "
                                f"errors {d['errors']} {d['error_samples']}")  # fmt: skip
        if report["http"].get("denokv_log_problems"):
            problems.append(
                f"denokv server log (HTTP run): {report['http']['denokv_log_problems']}"
            )
    for line in problems:
        print("PROBLEM:", line)
    if background > 20:
        total = (os.cpu_count() or 1) * 100
        print(f"WARNING: other processes used {background:.0f} % CPU (of {total} %) before "
              "the run; the figures above are not reliable")  # fmt: skip
    print(f"total time {time.monotonic() - t0:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
