"""Sequential Deno latency and server CPU per request, each with its baseline in the same run.

    .venv/bin/python -m bench.latency [--json-out FILE]

a. **Sequential latency.** One real Deno program (`bench/seq_client.ts`) awaits
   `kv.get` `--calls` times, then `kv.set` `--calls` times, one call at a time,
   through `denokv serve` (each of `--servers`), and the same program on a
   local file (Deno's own engine): the baseline. One more row runs granian
   with `--no-tcp-quickack`, to show the ~40 ms stall the server removes.
b. **Server CPU per request.** The `bench/http_load.ts` loader (one Deno
   process, `--http-concurrency` requests in flight) sends KV Connect
   `snapshot_read` bodies to `denokv serve` and, as the baseline, to the
   trivial app (`bench/trivial_app.py`) on the same HTTP front, over HTTP/1.1
   and h2c; denokv runs as one process (`--processes 1`), like the trivial
   app. CPU figures are the server's own CPU time (utime + stime, summed over
   its process tree) divided by the requests it answered in the window: other
   processes on the machine change the wall time much more than that.

Exit status 1 if a Deno client fails, a request does not get 200, or a server
logs an error.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bank import BANK_CLIENT, INITIAL, TRIVIAL_APP, http_load, snapshot_read_bodies
from bench.bank_report import table
from bench.harness import Children, Server, background_load, run_deno_json, start_denokv
from tests.support.ports import free_port

BENCH = Path(__file__).resolve().parent
SEQ_CLIENT = BENCH / "seq_client.ts"
TOKEN = "latency-bench-token-0123456789"
DATA_HEADERS = {
    "authorization": f"Bearer {TOKEN}",
    "x-denokv-version": "3",
    "x-denokv-database-id": "00000000-0000-0000-0000-000000000000",
    "content-type": "application/x-protobuf",
}


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def seq_row(children: Children, target: str, calls: int) -> dict[str, Any]:
    out = run_deno_json(children, SEQ_CLIENT, {"target": target, "calls": calls}, TOKEN,
                        timeout=60 + calls * 0.2)  # fmt: skip
    return {
        op: {"p50_ms": pct(out[f"{op}_ms"], 0.5), "p99_ms": pct(out[f"{op}_ms"], 0.99),
             "mean_ms": statistics.fmean(out[f"{op}_ms"]), "calls": len(out[f"{op}_ms"])}
        for op in ("get", "set")
    }  # fmt: skip


def run_latency(children: Children, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    rows["deno local file"] = seq_row(children, str(work / "local.sqlite"), args.calls)
    variants: list[tuple[str, list[str]]] = [(s, []) for s in args.servers]
    variants.append(("granian", ["--no-tcp-quickack"]))
    for http_server, extra in variants:
        name = f"denokv {http_server}" + (" --no-tcp-quickack" if extra else "")
        calls = args.calls if not extra else min(args.calls, 40)  # 40 ms each: keep it short
        db = work / f"seq-{len(rows)}.sqlite"
        srv = start_denokv(children, db, TOKEN, http_server, extra)
        try:
            rows[name] = seq_row(children, srv.url, calls)
        finally:
            srv.stop()
        rows[name]["log_problems"] = srv.log_problems()
    return rows


def trivial_server(children: Children, work: Path, http_server: str) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", TRIVIAL_APP, "--addr", f"127.0.0.1:{port}",
           "--http-server", http_server]  # fmt: skip
    return Server(children, cmd, port, TOKEN, work / f"trivial-{http_server}.log")


def run_cpu(children: Children, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    bodies = snapshot_read_bodies(args.accounts)
    out: dict[str, Any] = {}
    fronts = [(s, s) for s in args.servers]
    if "granian" in args.servers:
        fronts.append(("granian-asgi", None))  # the trivial ASGI app: the old baseline
    for front, denokv_front in fronts:
        for rep in range(args.repeats):
            if denokv_front is not None:
                # One process, like the trivial app it is compared with.
                one = 1 if denokv_front == "granian" else None
                srv = start_denokv(children, work / f"cpu-{front}-{rep}.sqlite", TOKEN,
                                   denokv_front, [], one)  # fmt: skip
                try:
                    init = {"mode": "init", "target": srv.url, "accounts": args.accounts,
                            "initial": INITIAL}  # fmt: skip
                    run_deno_json(children, BANK_CLIENT, init, TOKEN, 120)
                    for proto in ("http1", "h2c"):
                        out.setdefault(f"denokv {front} {proto}", []).append(http_load(
                            children, srv, f"{srv.url}/v2/snapshot_read", DATA_HEADERS,
                            bodies, proto, TOKEN, args))  # fmt: skip
                finally:
                    srv.stop()
                out.setdefault("log_problems", []).extend(srv.log_problems())
            trivial = trivial_server(children, work, front)
            try:
                for proto in ("http1", "h2c"):
                    out.setdefault(f"trivial {front} {proto}", []).append(http_load(
                        children, trivial, f"{trivial.url}/v2/snapshot_read", DATA_HEADERS,
                        bodies, proto, TOKEN, args))  # fmt: skip
            finally:
                trivial.stop()
    return out


def latency_table(rows: dict[str, Any], args: argparse.Namespace) -> str:
    base = rows["deno local file"]
    lines = [["client -> database", "get p50", "get p99", "set p50", "set p99", "calls",
              "get p50 target", "set p50 target"]]  # fmt: skip
    for name, r in rows.items():
        is_server = name.startswith("denokv") and "quickack" not in name
        lines.append([
            name,
            f"{r['get']['p50_ms']:.2f} ms", f"{r['get']['p99_ms']:.2f} ms",
            f"{r['set']['p50_ms']:.2f} ms", f"{r['set']['p99_ms']:.2f} ms",
            str(r["get"]["calls"]),
            _target(r["get"]["p50_ms"], 1.0) if is_server else "",
            _target(r["set"]["p50_ms"], 3.0) if is_server else "",
        ])  # fmt: skip
    lines.append(["(baseline: Deno's own engine on a file, same program)",
                  f"{base['get']['p50_ms']:.2f} ms", "", f"{base['set']['p50_ms']:.2f} ms",
                  "", "", "", ""])  # fmt: skip
    return table(lines)


def _target(value: float, bound: float) -> str:
    return f"<= {bound:g} ms ({'met' if value <= bound else 'NOT met'})"


def cpu_table(out: dict[str, Any]) -> str:
    lines = [["endpoint", "req/s", "p50", "p99", "server CPU", "CPU/req (runs)", "target"]]
    for name, runs in out.items():
        if name == "log_problems":
            continue
        per_req = [r["server_cpu_us_per_req"] for r in runs]
        target = ""
        if name.startswith("denokv") and name.endswith("http1"):
            target = f"<= 60 us ({'met' if statistics.median(per_req) <= 60 else 'NOT met'})"
        lines.append([
            name,
            f"{statistics.median(r['rps'] for r in runs):,.0f}",
            f"{statistics.median(r['p50_ms'] for r in runs):.2f} ms",
            f"{statistics.median(r['p99_ms'] for r in runs):.2f} ms",
            f"{statistics.median(r['server_cpu_pct'] for r in runs):.0f} %",
            f"{statistics.median(per_req):.0f} us (" + ", ".join(f"{v:.0f}" for v in per_req)
            + ")",
            target,
        ])  # fmt: skip
    return table(lines)


def failures(latency: dict[str, Any], cpu: dict[str, Any]) -> list[str]:
    found = []
    for name, r in latency.items():
        found += [f"{name}: {p}" for p in r.get("log_problems", [])]
    found += [f"cpu phase: {p}" for p in cpu.get("log_problems", [])]
    for name, runs in cpu.items():
        if name == "log_problems":
            continue
        for r in runs:
            if r["errors"] or set(r["statuses"]) - {"200"}:
                found.append(f"{name}: statuses {r['statuses']}, errors {r['error_samples']}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers",
        default="granian,hypercorn",
        help="HTTP fronts to measure (default granian,hypercorn)",
    )
    parser.add_argument("--calls", type=int, default=300, help="sequential calls of each kind")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--http-seconds", type=float, default=5)
    parser.add_argument("--http-concurrency", type=int, default=64)
    parser.add_argument("--http-loaders", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="CPU windows per endpoint")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--json-out")
    args = parser.parse_args()  # fmt: skip
    args.servers = [s for s in args.servers.split(",") if s]
    background = background_load()
    print(f"background CPU before the run: {background:.0f} % (of {100 * 2} % on 2 cores)")
    children = Children()
    started = time.monotonic()
    latency: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="denokv-latency-") as tmp:
        work = Path(tmp)
        try:
            if not args.skip_latency:
                latency = run_latency(children, work, args)
                print(latency_table(latency, args))
            if not args.skip_cpu:
                cpu = run_cpu(children, work, args)
                print(cpu_table(cpu))
        finally:
            children.stop_all()
    problems = failures(latency, cpu)
    for p in problems:
        print("PROBLEM:", p)
    print(f"{time.monotonic() - started:.0f} s in all")
    if args.json_out:
        report = {"background_cpu_pct": background, "latency": latency, "cpu": cpu}
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
