"""Backup benchmark: what continuous backup to S3 costs, and how fast a restore is.

    .venv/bin/python -m bench.backup [--seconds 10] [--rates 100,1000,5000]
        [--keys 1000000] [--log-entries 100000] [--skip-rates] [--skip-throughput]
        [--skip-restore] [--json-out FILE] [--keep]

Everything runs against a local moto S3 server (127.0.0.1) started by the
script. Three parts, each printing its baseline beside its figures:

a. S3 traffic. A primary with backup (`--s3-compression zstd`, then `none`;
   sync interval 1 s) takes paced writes from a Deno process
   (bench/kv_writer.ts: one `set(["w", id], ~100-byte value)` per write) at
   each rate of `--rates` for `--seconds`. Counted from moto's request log:
   PUTs per second during the window. From the shipper's metrics: bytes
   shipped per committed byte (key + value bytes the load wrote, the
   baseline), from window start until the redo backlog is empty again.
b. Write throughput with backup on vs off: the same unpaced Deno load
   (`--unpaced-procs` processes x `--unpaced-concurrency` loops) against a
   primary without backup (the baseline) and one with backup. Target >= 0.9x.
c. Restore: a `--keys` database built in-process, served with backup (the
   snapshot ships), then `--log-entries` more log entries written through the
   server (atomic writes of `--mutations-per-write` sets: half update old keys,
   half add new ones). Once the backlog is 0 the primary stops and
   `denokv pitr restore` is timed; the restored file must hold exactly the
   primary's keys and values. Baselines: downloading every object of the
   generation (16 threads) and `VACUUM INTO` of the primary's file. Target
   <= 60 s.

Exit status 1 when a check fails (errors, missing keys, digest mismatch).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import s3bench as sb

PARTS = ("rates", "throughput", "restore")


def primary(
    children: sb.Children, work: Path, name: str, token: str, moto: sb.Moto | None,
    prefix: str | None, extra: Sequence[str] = (),
) -> sb.Node:  # fmt: skip
    args = list(extra)
    if prefix is not None:
        assert moto is not None
        args += moto.s3_flags(prefix)
    node = sb.Node(children, work / f"{name}.sqlite", token, moto, args, name)
    if prefix is not None:
        sb.wait_generation(node)
    return node


# -- a. S3 traffic at paced rates ------------------------------------------------------------


def run_rates(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    children, work, token, moto = run.parts()
    rows = []
    for compression in args.compressions:
        node = primary(children, work, f"rates-{compression}", token, moto,
                       f"rates-{compression}/", ["--s3-compression", compression])  # fmt: skip
        try:
            for i, rate in enumerate(args.rates):
                m0 = node.metrics()
                writer = sb.DenoWriter(
                    children, node.url, token, seconds=args.seconds, rate=rate,
                    concurrency=args.concurrency, procs=args.paced_procs,
                    value_size=args.value_size, id_base=(i + 1) * 10_000_000,
                )  # fmt: skip
                writer.wait_start()
                off0, cpu0, t0 = moto.log_offset(), node.cpu(), time.monotonic()
                time.sleep(args.seconds)
                off1, cpu1, t1 = moto.log_offset(), node.cpu(), time.monotonic()
                res = writer.results()
                drain = sb.wait_backlog_zero(node.db)
                time.sleep(0.2)  # let moto log the last request
                off2 = moto.log_offset()
                m1 = node.metrics()
                window = moto.requests(off0, off1)
                total = moto.requests(off0, off2)
                shipped = sb.metric(m1, "denokv_s3_bytes_shipped") - sb.metric(
                    m0, "denokv_s3_bytes_shipped"
                )
                segments = sb.metric(m1, "denokv_s3_segments_shipped") - sb.metric(
                    m0, "denokv_s3_segments_shipped"
                )
                row = {
                    "compression": compression, "target_rate": rate, "rate": res["writes"] /
                    args.seconds, "writes": res["writes"], "errors": res["errors"],
                    "error_samples": res["error_samples"],
                    "committed_bytes": res["committed_bytes"], "shipped_bytes": shipped,
                    "bytes_ratio": shipped / max(1, res["committed_bytes"]),
                    "segments": segments, "puts_window": window.get("PUT", 0),
                    "puts_per_s": window.get("PUT", 0) / (t1 - t0),
                    "puts_total": total.get("PUT", 0),
                    "other_per_s": sum(v for k, v in window.items() if k != "PUT") / (t1 - t0),
                    "drain_s": drain, "server_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                    "behind_max_ms": res["behind_max_ms"],
                }  # fmt: skip
                rows.append(row)
                print(f"  {compression:4} {rate:>5}/s target: {row['rate']:,.0f} writes/s, "
                      f"{row['puts_per_s']:.2f} PUT/s, {row['bytes_ratio']:.3f} B shipped per "
                      f"committed B, backlog drained {drain:.1f} s after the window",
                      flush=True)  # fmt: skip
        finally:
            node.stop()
        problems = node.log_problems()
        if problems:
            rows[-1]["log_problems"] = problems
    return rows


def rates_table(rows: list[dict[str, Any]]) -> str:
    out = [["compression", "target writes/s", "achieved writes/s", "PUT/s", "other S3 req/s",
            "segments", "committed (baseline)", "shipped", "shipped/committed",
            "server CPU"]]  # fmt: skip
    for r in rows:
        out.append([
            r["compression"], f"{r['target_rate']:,}", f"{r['rate']:,.0f}",
            f"{r['puts_per_s']:.2f}", f"{r['other_per_s']:.2f}", f"{r['segments']:.0f}",
            f"{r['committed_bytes'] / 1e6:.2f} MB", f"{r['shipped_bytes'] / 1e6:.2f} MB",
            f"{r['bytes_ratio']:.3f}", sb.pct(r["server_cpu_pct"]),
        ])  # fmt: skip
    return sb.table(out)


# -- b. throughput with backup on vs off ---------------------------------------------------------


def run_throughput(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> dict[str, Any]:
    children, work, token, moto = run.parts()
    out: dict[str, Any] = {"off": [], "on": []}
    for rep in range(args.repeats):
        for mode in ("off", "on"):
            prefix = f"throughput-{rep}/" if mode == "on" else None
            node = primary(children, work, f"tp-{mode}-{rep}", token, moto, prefix)
            try:
                writer = sb.DenoWriter(
                    children, node.url, token, seconds=args.seconds, rate=0,
                    concurrency=args.unpaced_concurrency, procs=args.unpaced_procs,
                    value_size=args.value_size,
                )  # fmt: skip
                writer.wait_start()
                cpu0, m0, t0 = node.cpu(), sb.machine_busy(), time.monotonic()
                time.sleep(args.seconds)
                cpu1, m1, t1 = node.cpu(), sb.machine_busy(), time.monotonic()
                res = writer.results()
                drain = sb.wait_backlog_zero(node.db) if mode == "on" else 0.0
                metrics = node.metrics()
            finally:
                node.stop()
            ncpu = os.cpu_count() or 1
            row = {
                "rate": res["writes"] / args.seconds, "writes": res["writes"],
                "errors": res["errors"], "error_samples": res["error_samples"],
                "server_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                "machine_cpu_pct": 100 * ncpu * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
                "drain_s": drain,
                "commits": sb.metric(metrics, "denokv_commits"),
                "log_problems": node.log_problems(),
            }  # fmt: skip
            out[mode].append(row)
            print(f"  backup {mode:3}: {row['rate']:,.0f} writes/s, server CPU "
                  f"{row['server_cpu_pct']:.0f} %", flush=True)  # fmt: skip
    for mode in ("off", "on"):
        out[f"{mode}_rate"] = sum(r["rate"] for r in out[mode]) / len(out[mode])
    out["ratio"] = out["on_rate"] / out["off_rate"] if out["off_rate"] else math.nan
    return out


def throughput_table(tp: dict[str, Any]) -> str:
    rows = [["", "backup off (baseline)", "backup on", "ratio", "target"]]
    off, on = tp["off"], tp["on"]
    met = tp["ratio"] >= 0.9
    rows.append(
        [
            "writes/s (unpaced)",
            f"{tp['off_rate']:,.0f}",
            f"{tp['on_rate']:,.0f}",
            f"{tp['ratio']:.2f}x",
            ">= 0.9x " + ("(met)" if met else "(NOT met)"),
        ]
    )
    for name, key in (
        ("server process CPU", "server_cpu_pct"),
        (f"machine CPU (of {(os.cpu_count() or 1) * 100} %)", "machine_cpu_pct"),
    ):
        rows.append([name, sb.pct(sum(r[key] for r in off) / len(off)),
                     sb.pct(sum(r[key] for r in on) / len(on)), "", ""])  # fmt: skip
    rows.append(["errors", str(sum(r["errors"] for r in off)),
                 str(sum(r["errors"] for r in on)), "", ""])  # fmt: skip
    return sb.table(rows)


# -- c. restore ------------------------------------------------------------------------------------


def run_restore(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> dict[str, Any]:
    children, work, token, moto = run.parts()
    out: dict[str, Any] = {}
    db = work / "restore-primary.sqlite"
    print(f"  building {args.keys:,} keys in-process ...", flush=True)
    out["build_s"] = sb.build_big_db(db, args.keys, args.value_size)
    node = sb.Node(children, db, token, moto, moto.s3_flags("restore/"), "restore-primary")
    try:
        out["snapshot_ship_s"] = sb.wait_generation(node)
        print(f"  built in {out['build_s']:.1f} s; snapshot shipped {out['snapshot_ship_s']:.1f} s "
              "after the primary's port opened", flush=True)  # fmt: skip
        out["load"] = asyncio.run(
            sb.load_log_entries(
                node.url,
                token,
                args.log_entries,
                args.mutations_per_write,
                args.keys,
                args.value_size,
            )
        )
        out["drain_s"] = sb.wait_backlog_zero(db, timeout=300)
        print(f"  {out['load']['writes']} writes x {args.mutations_per_write} mutations in "
              f"{out['load']['seconds']:.1f} s; backlog empty {out['drain_s']:.1f} s later",
              flush=True)  # fmt: skip
    finally:
        node.stop()
    out["log_problems"] = node.log_problems()
    out["expected_keys"], out["primary_digest"] = sb.kv_digest(db)
    sizes = moto.object_sizes("restore/")
    out["objects"] = len(sizes)
    out["object_bytes"] = sum(sizes.values())
    out["snapshot_objects"] = sum(1 for k in sizes if "/snapshots/" in k)
    out["log_objects"] = sum(1 for k in sizes if "/logs/" in k)

    restored = work / "restored.sqlite"
    wall, stdout = sb.run_cli(["--sqlite-path", str(restored), "pitr", "restore",
                               *moto.s3_flags("restore/")], moto)  # fmt: skip
    out["restore_s"] = wall
    out["restore_stdout"] = stdout.strip()
    out["restored_keys"], out["restored_digest"] = sb.kv_digest(restored)
    out["match"] = out["restored_digest"] == out["primary_digest"]
    print(f"  pitr restore: {wall:.1f} s, {out['restored_keys']:,} keys "
          f"({'match' if out['match'] else 'MISMATCH'})", flush=True)  # fmt: skip

    t0 = time.monotonic()
    moto.download_all(list(sizes))
    out["download_s"] = time.monotonic() - t0
    copy = work / "vacuum-copy.sqlite"
    t0 = time.monotonic()
    conn = sqlite3.connect(db)
    conn.execute("vacuum into ?", (str(copy),))
    conn.close()
    out["vacuum_s"] = time.monotonic() - t0
    return out


def restore_table(r: dict[str, Any], args: argparse.Namespace) -> str:
    met = r["restore_s"] <= 60 and r["match"]
    rows = [["step", "seconds", "note"]]
    rows.append(["pitr restore (CLI, wall)", f"{r['restore_s']:.1f}",
                 f"{r['restored_keys']:,} keys, digest "
                 f"{'matches' if r['match'] else 'DIFFERS'}; target <= 60 s "
                 + ("(met)" if met else "(NOT met)")])  # fmt: skip
    rows.append(
        [
            "baseline: GET every object (16 threads)",
            f"{r['download_s']:.1f}",
            f"{r['objects']} objects ({r['snapshot_objects']} snapshot, "
            f"{r['log_objects']} log), {r['object_bytes'] / 1e6:.1f} MB",
        ]
    )
    rows.append(["baseline: VACUUM INTO of the primary file", f"{r['vacuum_s']:.1f}",
                 "local copy of the same database"])  # fmt: skip
    rows.append(["(setup) build in-process", f"{r['build_s']:.1f}",
                 f"{args.keys:,} keys x {args.value_size} B values"])  # fmt: skip
    rows.append(["(setup) first snapshot shipped", f"{r['snapshot_ship_s']:.1f}",
                 "from port open to generation complete"])  # fmt: skip
    rows.append(["(setup) log entries written", f"{r['load']['seconds']:.1f}",
                 f"{r['load']['writes']} writes x {args.mutations_per_write} mutations, "
                 f"{r['load']['new_keys']:,} new keys"])  # fmt: skip
    return sb.table(rows)


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10, help="window of each load (a, b)")
    p.add_argument("--rates", default="100,1000,5000", help="paced writes/s for part a")
    p.add_argument("--compressions", default="zstd,none")
    p.add_argument("--paced-procs", type=int, default=2, help="Deno processes of the paced load")
    p.add_argument("--concurrency", type=int, default=32, help="loops per paced process")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--unpaced-procs", type=int, default=2)
    p.add_argument("--unpaced-concurrency", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="off/on pairs in part b")
    p.add_argument("--keys", type=int, default=1_000_000, help="database size for part c")
    p.add_argument("--log-entries", type=int, default=100_000)
    p.add_argument("--mutations-per-write", type=int, default=100)
    for part in PARTS:
        p.add_argument(f"--skip-{part}", action="store_true")
    sb.BenchRun.add_options(p)
    args = p.parse_args()
    args.rates = [int(x) for x in args.rates.split(",") if x]
    args.compressions = [x for x in args.compressions.split(",") if x]

    t_start = time.monotonic()
    with sb.BenchRun("backup", args) as run:
        if not args.skip_rates:
            print("a. S3 traffic at paced write rates", flush=True)
            run.report["rates"] = run_rates(run, args)
        if not args.skip_throughput:
            print("b. unpaced write throughput, backup off vs on", flush=True)
            run.report["throughput"] = run_throughput(run, args)
        if not args.skip_restore:
            print("c. restore", flush=True)
            run.report["restore"] = run_restore(run, args)
    report, background = run.report, run.background

    problems = []
    print()
    if "rates" in report:
        print(f"a. S3 traffic, sync interval 1 s, {args.seconds:g} s per row, "
              f"{args.value_size} B values + 12 B keys")  # fmt: skip
        print(rates_table(report["rates"]))
        print()
        for r in report["rates"]:
            if r["errors"]:
                problems.append(f"rates {r['compression']} {r['target_rate']}: {r['errors']} "
                                f"errors {r['error_samples']}")  # fmt: skip
            if r.get("log_problems"):
                problems.append(f"rates {r['compression']}: server log {r['log_problems']}")
    if "throughput" in report:
        tp = report["throughput"]
        print(
            f"b. unpaced writes, {args.unpaced_procs} Deno processes x "
            f"{args.unpaced_concurrency} loops, {args.seconds:g} s, {args.repeats} run(s) each"
        )
        print(throughput_table(tp))
        print()
        for mode in ("off", "on"):
            for r in tp[mode]:
                if r["errors"]:
                    problems.append(f"throughput {mode}: {r['errors']} errors {r['error_samples']}")
                if r["log_problems"]:
                    problems.append(f"throughput {mode}: server log {r['log_problems']}")
    if "restore" in report:
        r = report["restore"]
        print(f"c. restore of {args.keys:,} keys + {args.log_entries:,} log entries")
        print(restore_table(r, args))
        print()
        if not r["match"]:
            problems.append(f"restore: {r['restored_keys']} keys restored, "
                            f"{r['expected_keys']} expected, digests differ")  # fmt: skip
        if r["log_problems"]:
            problems.append(f"restore: primary log {r['log_problems']}")
    for line in problems:
        print("PROBLEM:", line)
    if background > 20:
        print(f"WARNING: other processes used {background:.0f} % CPU before the run")
    print(f"total time {time.monotonic() - t_start:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
