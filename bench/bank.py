"""Bank-transfer benchmark: the denokv server vs Deno's in-process KV engine.

    .venv/bin/python -m bench.bank [--seconds 10] [--readers 2] [--writers 2]
        [--concurrency 8 | --one-client 128,32] [--accounts 10000] [--skip-baseline]
        [--http-server granian|hypercorn] [--processes 1,2] [--fsync-delay-ms 2]

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
   `http://127.0.0.1:PORT` (KV Connect over h2c), once per `--processes`
   value (`denokv serve --processes N`; by default the server's default).
2. Deno in-process baseline: ONE Deno process with the same total number of
   loops (readers*concurrency reader loops + writers*concurrency writer loops)
   on `Deno.openKv(<sqlite file>)`. Deno's local engine belongs to one process;
   several processes opening one file would contend on SQLite's file lock and
   busy-retry loop, which is neither how Deno KV is meant to be shared nor a
   fair stand-in for a server.
3. HTTP overhead: the same Deno fetch loader posts the same snapshot_read
   protobuf bodies to the server's /v2/snapshot_read and to a trivial ASGI app
   (bench/trivial_app.py) on the same HTTP server stack, over HTTP/1.1 and h2c.

`--fsync-delay-ms D` runs every child process (the server and its worker
processes, Deno's in-process engine, the clients) under the LD_PRELOAD shim
`tests/native/fsync_shim.c`, which sleeps D ms before every fsync and
fdatasync: a slow disk, the same for both sides.

Exit status 1 if a balance check fails or a client reports errors.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import server_figures
from bench.bank_report import bank_table, bank_targets, http_table
from bench.harness import (
    Children,
    CpuWindow,
    Server,
    add_wait_quiet_option,
    background_load,
    has_library,
    run_deno_json,
    start_deno,
    start_denokv,
    use_fsync_delay,
    wait_deno_json,
    wait_for_quiet,
)
from denokv.keys import KvNumber, encode_key
from denokv.proto import datapath_pb2 as pb
from tests.support.paths import ROOT
from tests.support.ports import free_port

BENCH = ROOT / "bench"
BANK_CLIENT = BENCH / "bank_client.ts"
HTTP_LOAD = BENCH / "http_load.ts"
TRIVIAL_APP = "bench.trivial_app"  # the baseline server, run as `python -m` from ROOT
INITIAL = 1000
LOG_BASE = 1.02
START_DELAY_S = 4.0  # time for every client process to start and connect
CLIENT_SLACK_S = 90.0  # subprocess timeout beyond the measured window


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
            return float(LOG_BASE ** (b + 0.5) / 1000)
    return float(h["max_us"] / 1000)


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
    window = CpuWindow(server, extra={f"client{i}": proc.pid for i, proc in enumerate(procs)})
    time.sleep(max(0.0, start_at / 1000 - time.time()))
    window.start()
    said = server_figures.scrape(server.url) if server else {}
    time.sleep(args.seconds / 2)
    # Which processes run on the slow disk (None: the real disk), while all of them run.
    shim_seen = [has_library(pid, args.shim) for pid in (server.pids() if server else [])]
    shim_seen += [has_library(p.pid, args.shim) for p in procs]
    time.sleep(args.seconds / 2)
    cpu = window.stop()
    if server:
        cpu.update(server_figures.window(said, server_figures.scrape(server.url)))
    results = []
    timeout = START_DELAY_S + 0.5 * len(groups) + args.seconds + CLIENT_SLACK_S
    for proc in procs:
        results.append(wait_deno_json(children, proc, timeout))
    clients = sum(cpu.pop(f"client{i}_cpu_s") for i in range(len(procs)))
    cpu["client_cpu_pct"] = 100 * clients / cpu["wall_s"]
    return {**summarize(results, args.seconds), **cpu, "fsync_shim_loaded": shim_seen}


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
    return bool(
        verify["count"] == accounts and verify["bad"] == 0 and verify["sum"] == accounts * INITIAL
    )


def run_server_side(
    children: Children, work: Path, token: str, args: argparse.Namespace, processes: int | None
) -> dict[str, Any]:
    db = work / f"server-{processes or 'default'}.sqlite"
    server = start_denokv(children, db, token, args.http_server, args.server_arg, processes)
    info: dict[str, Any] = {"server_log": str(server.log)}
    try:
        init = {"mode": "init", "target": server.url, "accounts": args.accounts,
                "initial": INITIAL}  # fmt: skip
        run_deno_json(children, BANK_CLIENT, init, token, 120)
        result = bank_phase(children, server.url, token, args.client_groups, args, server)
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


def run_baseline(
    children: Children, work: Path, token: str, args: argparse.Namespace
) -> dict[str, Any]:
    db = work / "inprocess.sqlite"
    init = {"mode": "init", "target": str(db), "accounts": args.accounts, "initial": INITIAL}
    run_deno_json(children, BANK_CLIENT, init, token, 120)
    result = bank_phase(children, str(db), token, [args.loop_totals], args)
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


def run_http_compare(
    children: Children, work: Path, token: str, args: argparse.Namespace
) -> dict[str, Any]:
    headers = {
        "authorization": f"Bearer {token}",
        "x-denokv-version": "3",
        "x-denokv-database-id": "00000000-0000-0000-0000-000000000000",
        "content-type": "application/x-protobuf",
    }
    bodies = snapshot_read_bodies(args.accounts)
    db = work / "http.sqlite"
    out: dict[str, Any] = {}
    # One process, like the trivial app it is compared with (bench/h2load_reads.py
    # compares 1 and 2 processes).
    processes = 1 if args.http_server == "granian" else None
    kv = start_denokv(children, db, token, args.http_server, args.server_arg, processes)
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
    cmd = [sys.executable, "-m", TRIVIAL_APP, "--addr", f"127.0.0.1:{port}",
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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10, help="measured window per phase")
    p.add_argument("--readers", type=int, default=2, help="reader processes")
    p.add_argument("--writers", type=int, default=2, help="writer processes")
    p.add_argument("--concurrency", type=int, default=8, help="async loops per process")
    p.add_argument("--one-client", metavar="R,W", default="",
                   help="instead of --readers/--writers/--concurrency: ONE Deno client process "
                   "with R reader and W writer loops (upstream's shape: 128,32)")  # fmt: skip
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--skip-baseline", action="store_true", help="skip Deno's in-process run")
    p.add_argument("--skip-http", action="store_true", help="skip the raw HTTP comparison")
    p.add_argument("--http-server", choices=("granian", "hypercorn"), default="granian")
    p.add_argument("--http-seconds", type=float, default=5, help="window per raw HTTP run")
    p.add_argument("--http-concurrency", type=int, default=64,
                   help="concurrent requests, over all loaders")  # fmt: skip
    p.add_argument("--http-loaders", type=int, default=1, help="loader processes")
    p.add_argument("--processes", default="",
                   help="`denokv serve --processes` values, comma-separated, one server run "
                   "each (e.g. 1,2); default: one run with the server's default")  # fmt: skip
    p.add_argument("--fsync-delay-ms", type=float, default=0,
                   help="run every child (server, its workers, Deno's in-process engine) "
                   "with each fsync/fdatasync delayed this long: a slow disk")  # fmt: skip
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra argument for `denokv serve` (repeatable), e.g. "
                   "--server-arg=--num-workers=2")  # fmt: skip
    p.add_argument("--json-out", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    add_wait_quiet_option(p)
    args = p.parse_args()
    if args.accounts < 2:
        p.error("--accounts must be at least 2")
    try:
        args.process_counts = [int(n) for n in args.processes.split(",") if n.strip()] or [None]
    except ValueError:
        p.error("--processes takes whole numbers separated by commas, e.g. 1,2")
    if any(n is not None and n < 1 for n in args.process_counts):
        p.error("--processes values must be at least 1")
    set_client_groups(p, args)
    return args


def set_client_groups(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`client_groups`: (reader loops, writer loops) per Deno client process of phase 1;
    `loop_totals`: the same loops summed, which phase 2 runs in one process."""
    if args.one_client:
        try:
            r, w = (int(n) for n in args.one_client.split(","))
        except ValueError:
            p.error("--one-client takes two whole numbers, R,W (e.g. 128,32)")
        if r < 0 or w < 1:
            p.error("--one-client needs R >= 0 reader loops and W >= 1 writer loops")
        args.client_groups = [(r, w)]
    else:
        c = args.concurrency
        args.client_groups = [(c, 0)] * args.readers + [(0, c)] * args.writers
    args.loop_totals = (
        sum(r for r, _ in args.client_groups),
        sum(w for _, w in args.client_groups),
    )


def describe_clients(args: argparse.Namespace) -> str:
    if args.one_client:
        r, w = args.loop_totals
        return f"1 Deno client process with {r} reader + {w} writer loops"
    return (f"{args.readers} reader + {args.writers} writer processes x "
            f"{args.concurrency} loops")  # fmt: skip


def server_label(processes: int | None) -> str:
    return "denokv" if processes is None else f"denokv, {processes} proc"


def run_all(args: argparse.Namespace, work: Path, report: dict[str, Any]) -> None:
    """The phases, in order; every figure goes into `report` as soon as it is known."""
    token = secrets.token_urlsafe(18)
    children = Children()
    try:
        args.shim = use_fsync_delay(args.fsync_delay_ms, work)
        report["servers"] = {}
        for processes in args.process_counts:
            srv = run_server_side(children, work, token, args, processes)
            report["servers"][server_label(processes)] = srv
            print(f"  {server_label(processes)} done: {srv['reads_per_s']:,.0f} reads/s, "
                  f"{srv['transfers_per_s']:,.0f} transfers/s, server CPU "
                  f"{srv['server_cpu_pct']:.0f} % over {srv['server_processes']} "
                  "processes", flush=True)  # fmt: skip
        if not args.skip_baseline:
            total_r, total_w = args.loop_totals
            print(f"  baseline: 1 Deno process, {total_r} reader + {total_w} writer loops, "
                  "Deno.openKv(<file>)", flush=True)  # fmt: skip
            report["baseline"] = run_baseline(children, work, token, args)
        if not args.skip_http:
            print(f"  raw HTTP: {args.http_concurrency} concurrent POSTs, "
                  f"{args.http_seconds:g} s per run", flush=True)  # fmt: skip
            report["http"] = run_http_compare(children, work, token, args)
    finally:
        children.stop_all()


def find_problems(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    problems = []
    runs = [(name, res) for name, res in report.get("servers", {}).items()]
    if report.get("baseline"):
        runs.append(("in-process", report["baseline"]))
    for name, res in runs:
        if not res["balance_ok"]:
            problems.append(f"{name}: balance check failed: {res.get('verify_via_server')} "
                            f"{res.get('verify_via_file')}")  # fmt: skip
        if res["errors"]:
            problems.append(f"{name}: {res['errors']} client errors, e.g. {res['error_samples']}")
        if res["read_misses"]:
            problems.append(f"{name}: {res['read_misses']} reads found no account")
        if res.get("server_log_problems"):
            problems.append(f"{name} server log: {res['server_log_problems']}")
        if res.get("server_exit") not in (0, None):
            problems.append(f"{name}: server exited with status {res['server_exit']}")
        if args.shim is not None and not all(res["fsync_shim_loaded"]):
            problems.append(f"{name}: the fsync shim is missing from some processes: "
                            f"{res['fsync_shim_loaded']}")  # fmt: skip
    for k, d in report.get("http", {}).items():
        if isinstance(d, dict) and (d["errors"] or set(d["statuses"]) - {"200"}):
            problems.append(f"raw HTTP {k}: statuses {d['statuses']}, "
                            f"errors {d['errors']} {d['error_samples']}")  # fmt: skip
    if report.get("http", {}).get("denokv_log_problems"):
        problems.append(f"denokv server log (HTTP run): {report['http']['denokv_log_problems']}")
    return problems


def main() -> int:
    args = parse_args()
    # SIGTERM ends the run like Ctrl-C: the `finally` below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    background = wait_for_quiet(args.wait_quiet) if args.wait_quiet else background_load()
    work = Path(tempfile.mkdtemp(prefix="denokv-bench-"))
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    report["background_cpu_pct"] = background
    disk = f"fsync +{args.fsync_delay_ms:g} ms" if args.fsync_delay_ms > 0 else "real disk"
    print(f"bank: {args.accounts} accounts, {describe_clients(args)}, {args.seconds:g} s, {disk}, "
          f"server --http-server {args.http_server} {' '.join(args.server_arg)}; "
          f"background CPU {background:.0f} %", flush=True)  # fmt: skip
    t0 = time.monotonic()
    try:
        run_all(args, work, report)
    finally:
        report["machine_cpu_after_pct"] = background_load()
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2, default=str))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    print()
    print(bank_table(report["servers"], report.get("baseline"), bank_targets(args.fsync_delay_ms)))
    print()
    if "http" in report:
        print(http_table(report["http"]))
        print()
    problems = find_problems(report, args)
    for line in problems:
        print("PROBLEM:", line)
    total = (os.cpu_count() or 1) * 100
    print(f"machine CPU before the run {background:.0f} %, 1 s after it "
          f"{report['machine_cpu_after_pct']:.0f} % (of {total} %)")  # fmt: skip
    if background > 20:
        print(f"WARNING: other processes used {background:.0f} % CPU (of {total} %) before "
              "the run; the figures above are not reliable")  # fmt: skip
    print(f"total time {time.monotonic() - t0:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
