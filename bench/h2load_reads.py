"""`snapshot_read` throughput with 1 and 2 server processes, driven by h2load.

    .venv/bin/python -m bench.h2load_reads [--seconds 5] [--repeats 3] [--connections 16]
        [--streams 16] [--protos h2c,http1] [--processes 1,2] [--json-out FILE]

Needs `h2load` (Debian: `apt-get install -y nghttp2-client`); without it the
benchmark says so and exits 0 without measuring anything.

h2load is a load generator written in C that needs little CPU per request
(a Deno or Python loader needs about as much as the server it drives), so on
a 2-core machine it leaves the server most of the CPU. It sends one fixed
KV Connect `SnapshotRead` body (one key that exists, `["account", 0]`) with the
real auth and protocol headers to `/v2/snapshot_read` over `--connections`
connections (>= 8, so SO_REUSEPORT spreads them over the server processes)
with `--streams` requests in flight on each (HTTP/2 streams; HTTP/1.1 sends
one at a time per connection).

Measured, each variant in every repeat, interleaved so that changes in the
machine's load hit all of them alike:

- `denokv serve --processes N` for each N of `--processes`;
- the baseline, `bench/trivial_app.py` on the same HTTP front (the project's
  granian RSGI setup, a fixed 49-byte answer), in 1 process and in N processes
  listening on the same port (the most N processes could do here).

Per window: req/s (h2load's count over its measured duration), the server's
CPU (utime + stime summed over its whole process tree, from /proc) per
request, h2load's own CPU, and the CPU used by everything else on the machine.

Exit status 1 if a request does not get 2xx or a server logs an error.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bank import TRIVIAL_APP
from bench.bank_report import table
from bench.harness import (
    Children,
    CpuWindow,
    Server,
    add_wait_quiet_option,
    background_load,
    start_denokv,
    wait_for_quiet,
)
from denokv.keys import KvNumber, encode_key
from denokv.proto import datapath_pb2 as pb
from tests.support.ports import free_port

TOKEN = "h2load-bench-token-0123456789"
HEADERS = {
    "authorization": f"Bearer {TOKEN}",
    "x-denokv-version": "3",
    "x-denokv-database-id": "00000000-0000-0000-0000-000000000000",
    "content-type": "application/x-protobuf",
}
KEY = encode_key(("account", KvNumber(0.0)))
WARM_UP_S = 1.0
INSTALL_HINT = "apt-get install -y nghttp2-client  (Debian/Ubuntu: h2load is in nghttp2-client)"


# -- the servers --------------------------------------------------------------------


READ_BODY = pb.SnapshotRead(
    ranges=[pb.ReadRange(start=KEY, end=KEY + b"\x00", limit=1)]
).SerializeToString()


def seed(url: str) -> None:
    """Write the key the load reads, and check that the load's body finds it."""
    write = pb.AtomicWrite(mutations=[pb.Mutation(
        key=KEY, value=pb.KvValue(data=b"\x01" * 8, encoding=pb.VE_BYTES),
        mutation_type=pb.M_SET,
    )])  # fmt: skip
    with httpx.Client(timeout=30) as client:
        resp = client.post(f"{url}/v2/atomic_write", content=write.SerializeToString(),
                           headers=HEADERS)  # fmt: skip
        resp.raise_for_status()
        resp = client.post(f"{url}/v2/snapshot_read", content=READ_BODY, headers=HEADERS)
        resp.raise_for_status()
    found = pb.SnapshotReadOutput.FromString(resp.content).ranges[0].values
    if len(found) != 1:
        raise RuntimeError("the seeded key is not there")


class TrivialGroup:
    """`count` trivial app processes on one port (SO_REUSEPORT), measured as one server."""

    def __init__(self, children: Children, work: Path, count: int) -> None:
        self.port = free_port()
        self.members: list[Server] = []
        for i in range(count):
            cmd = [sys.executable, "-m", TRIVIAL_APP, "--addr", f"127.0.0.1:{self.port}"]
            log = work / f"trivial-{count}-{i}.log"
            self.members.append(Server(children, cmd, self.port, TOKEN, log, processes=i + 1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_by_process(self) -> dict[int, float]:
        return {pid: cpu for m in self.members for pid, cpu in m.cpu_by_process().items()}

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def log_problems(self) -> list[str]:
        return [p for m in self.members for p in m.log_problems()]


# -- h2load -------------------------------------------------------------------------


def h2load_cmd(url: str, body: Path, proto: str, args: argparse.Namespace) -> list[str]:
    cmd = ["h2load", "-c", str(args.connections), "-t", str(args.h2load_threads),
           "-D", f"{args.seconds:g}", "--warm-up-time", f"{WARM_UP_S:g}",
           "-d", str(body)]  # fmt: skip
    cmd += ["--h1"] if proto == "http1" else ["-m", str(args.streams)]
    for name, value in HEADERS.items():
        cmd += ["-H", f"{name}: {value}"]
    return [*cmd, f"{url}/v2/snapshot_read"]


def parse_h2load(out: str) -> dict[str, Any]:
    def grab(pattern: str) -> re.Match[str]:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"unexpected h2load output:\n{out[-2000:]}")
        return found

    rps = float(grab(r"finished in [\d.]+\w*s, ([\d.]+) req/s").group(1))
    req = grab(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
               r"(\d+) errored, (\d+) timeout")  # fmt: skip
    codes = grab(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
    lat = grab(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")
    return {
        "rps": rps,
        "requests": int(req.group(1)),
        "succeeded": int(req.group(3)),
        "failed": int(req.group(4)) + int(req.group(5)) + int(req.group(6)),
        "status_2xx": int(codes.group(1)),
        "status_other": sum(int(codes.group(i)) for i in (2, 3, 4)),
        "latency_min_mean_max": [lat.group(1), lat.group(3), lat.group(2)],
    }


def measure(server: Any, body: Path, proto: str, args: argparse.Namespace) -> dict[str, Any]:
    """One h2load window; server CPU over the same measured duration."""
    proc = subprocess.Popen(h2load_cmd(server.url, body, proto, args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    window = CpuWindow(server, extra={"h2load": proc.pid})
    time.sleep(WARM_UP_S + 0.05)  # connections are up in a few ms; then the warm-up
    window.start()
    time.sleep(args.seconds)
    cpu = window.stop()
    out, _ = proc.communicate(timeout=args.seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}):\n{out[-2000:]}")
    result = {**parse_h2load(out), **cpu}
    served = result["rps"] * cpu["wall_s"]
    result["server_cpu_us_per_req"] = 1e6 * cpu["server_cpu_s"] / max(1.0, served)
    result["h2load_cpu_us_per_req"] = 1e6 * cpu["h2load_cpu_s"] / max(1.0, served)
    others = cpu["machine_cpu_pct"] - cpu["server_cpu_pct"] - 100 * cpu["h2load_cpu_s"] / cpu[
        "wall_s"]  # fmt: skip
    result["other_cpu_pct"] = max(0.0, others)
    return result


# -- the run --------------------------------------------------------------------------


def start_variants(children: Children, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for n in args.process_counts:
        servers[f"trivial app, {n} proc"] = TrivialGroup(children, work, n)
    for n in args.process_counts:
        srv = start_denokv(children, work / f"kv-{n}.sqlite", TOKEN, "granian", [], n)
        servers[f"denokv, {n} proc"] = srv
    return servers


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    children = Children()
    results: dict[str, Any] = {}
    try:
        servers = start_variants(children, work, args)
        body = work / "snapshot_read.bin"
        body.write_bytes(READ_BODY)
        for name, srv in servers.items():
            if name.startswith("denokv"):
                seed(srv.url)
        for rep in range(args.repeats):
            for proto in args.protos:
                for name, srv in servers.items():
                    got = measure(srv, body, proto, args)
                    results.setdefault(f"{name} {proto}", []).append(got)
                    print(f"  [{rep + 1}/{args.repeats}] {name} {proto}: {got['rps']:,.0f} req/s,"
                          f" server {got['server_cpu_us_per_req']:.1f} us/req "
                          f"({got['server_cpu_pct']:.0f} %), others "
                          f"{got['other_cpu_pct']:.0f} %", flush=True)  # fmt: skip
        for srv in servers.values():
            srv.stop()
        results["log_problems"] = [p for s in servers.values() for p in s.log_problems()]
    finally:
        children.stop_all()
    return results


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [["server", "proto", "req/s (median; runs)", "vs 1st", "server CPU",
             "per process", "CPU/req (runs)", "h2load CPU/req", "others' CPU",
             "target"]]  # fmt: skip
    first = args.process_counts[0]
    for proto in args.protos:
        for kind in ("trivial app", "denokv"):
            one = results[f"{kind}, {first} proc {proto}"]
            for n in args.process_counts:
                rows.append(report_row(kind, n, proto, results[f"{kind}, {n} proc {proto}"], one))
    return table(rows)


def report_row(
    kind: str, n: int, proto: str, runs: list[dict[str, Any]], one: list[dict[str, Any]]
) -> list[str]:
    scale = median(runs, "rps") / median(one, "rps")
    cpu = median(runs, "server_cpu_us_per_req")
    target = ""
    if kind == "denokv" and n == 2:
        target = f"vs 1 proc >= 1.6x ({'met' if scale >= 1.6 else 'NOT met'})"
    elif kind == "denokv" and n == 1:
        target = f"CPU/req <= 60 us ({'met' if cpu <= 60 else 'NOT met'})"
    by_process = [r["server_cpu_pct_by_process"] for r in runs]
    split = " + ".join(
        f"{statistics.median(p[i] for p in by_process if len(p) > i):.0f}" for i in range(n)
    )
    others = [r["other_cpu_pct"] for r in runs]
    return [
        f"{kind}, {n} proc", proto,
        f"{median(runs, 'rps'):,.0f} (" + ", ".join(f"{r['rps']:,.0f}" for r in runs) + ")",
        f"{scale:.2f}x", f"{median(runs, 'server_cpu_pct'):.0f} %", split,
        f"{cpu:.1f} us (" + ", ".join(f"{r['server_cpu_us_per_req']:.0f}" for r in runs) + ")",
        f"{median(runs, 'h2load_cpu_us_per_req'):.1f} us",
        f"{statistics.median(others):.0f} % (max {max(others):.0f})",
        target,
    ]  # fmt: skip


def problems(results: dict[str, Any]) -> list[str]:
    found = [f"server log: {p}" for p in results.get("log_problems", [])]
    for name, runs in results.items():
        if name == "log_problems":
            continue
        for r in runs:
            if r["failed"] or r["status_other"] or r["succeeded"] != r["status_2xx"]:
                found.append(f"{name}: {r['failed']} failed, {r['status_other']} not 2xx")
    return found


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5, help="measured window per variant")
    p.add_argument("--repeats", type=int, default=3, help="windows per variant")
    p.add_argument("--connections", type=int, default=16, help="h2load -c (>= 8)")
    p.add_argument("--streams", type=int, default=16, help="h2load -m: streams per connection")
    p.add_argument("--h2load-threads", type=int, default=1, help="h2load -t")
    p.add_argument("--protos", default="h2c", help="h2c, http1 or both (comma-separated)")
    p.add_argument("--processes", default="1,2", help="server process counts to compare")
    p.add_argument("--json-out", type=Path)
    add_wait_quiet_option(p)
    args = p.parse_args()
    args.protos = [x for x in args.protos.split(",") if x]
    if set(args.protos) - {"h2c", "http1"}:
        p.error("--protos takes h2c and/or http1")
    args.process_counts = [int(x) for x in args.processes.split(",") if x]
    if args.connections < 8:
        p.error("--connections must be at least 8, so SO_REUSEPORT spreads them")
    return args


def main() -> int:
    args = parse_args()
    if shutil.which("h2load") is None:
        print(f"SKIPPED: h2load is not installed. Install it with: {INSTALL_HINT}")
        return 0
    background = wait_for_quiet(args.wait_quiet) if args.wait_quiet else background_load(2)
    print(f"h2load: {args.connections} connections x {args.streams} streams, "
          f"{args.seconds:g} s windows x {args.repeats}; machine CPU before the run "
          f"{background:.0f} % (of 200 %)", flush=True)  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="denokv-h2load-") as tmp:
        results = run(args, Path(tmp))
    print()
    print(report(results, args))
    found = problems(results)
    for line in found:
        print("PROBLEM:", line)
    print(f"{time.monotonic() - started:.0f} s in all")
    if args.json_out:
        saved = {"background_cpu_pct": background, "args": vars(args), "results": results}
        args.json_out.write_text(json.dumps(saved, indent=1, default=str))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
