"""Read replica benchmark: replication lag, bootstrap time, time-travel checkout.

    .venv/bin/python -m bench.replica [--seconds 10] [--rates 100,1000]
        [--intervals 1s,200ms] [--keys 1000000] [--log-entries 100000]
        [--skip-lag] [--skip-bootstrap] [--json-out FILE] [--keep]

Everything runs against a local moto S3 server (127.0.0.1) started by the
script. Each part prints its baseline beside its figures:

a. Replication lag. For each interval of `--intervals` a fresh primary (with
   `--s3-sync-interval` = the interval) and a replica (`--s3-poll-interval` =
   the interval) run; a Deno process (bench/kv_writer.ts) writes at each rate
   of `--rates` for `--seconds`. Every write is `atomic().set(["w", id],
   value).set(["c"], id)` and the writer records its versionstamp and the wall
   time its commit was acknowledged. Meanwhile this script polls ["c"] every
   `--poll-ms` on the replica (Python client, consistency "eventual") and
   notes when each new versionstamp of ["c"] became visible: a write is
   visible once ["c"] shows its versionstamp or a later one. Lag = visible -
   acknowledged. Baseline: the same poller on the primary (strong reads), so
   the floor of the method shows beside the replica's figures. Also counted:
   S3 PUTs per second during the window (moto's request log; only the
   primary PUTs). Targets: with 1 s intervals p99 <= 2.5 s and <= 1 PUT/s;
   with 200 ms intervals p99 <= 0.6 s.
b. Bootstrap: a `--keys` database built in-process, served by a primary with
   backup (its snapshot ships); then a replica starts on an empty file and the
   time from its start to /readyz 200 is measured. Baseline: `denokv pitr
   restore` of the same generation. Target <= 60 s.
c. Checkout: the replica of b is stopped, `--log-entries` log entries are
   written through the primary (atomic writes of 100 sets), `pitr sync` fetches
   them into the replica file's redo log, then `pitr checkout` to the latest
   point and back to the bootstrap point are timed. The file must then hold
   exactly the primary's keys and values, then exactly the snapshot's.
   Baseline: the same entries applied to a copy of the file with one INSERT OR
   REPLACE each in one transaction (no undo bookkeeping).

Exit status 1 when a check fails (errors, unseen writes, digest mismatch).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from bench import s3bench as sb
from cli.options import parse_duration
from denokv.client.backend import Consistency
from denokv.versionstamp import version_of

TARGETS = {1.0: (2.5, 1.0), 0.2: (0.6, None)}  # interval s -> (p99 s, PUT/s)


# -- a. lag ---------------------------------------------------------------------------------


# What one poller saw: (time seen, versionstamp) per change, and how many reads failed.
Polled = tuple[list[tuple[float, str]], int]


async def poll(
    url: str, token: str, consistency: Consistency, until: float, every: float
) -> Polled:
    """(time seen, versionstamp) each time the versionstamp of ["c"] changes."""
    import denokv

    seen: list[tuple[float, str]] = []
    last = None
    errors = 0
    async with denokv.open_kv(url, access_token=token) as kv:
        while time.time() < until:
            t0 = time.monotonic()
            try:
                e = await kv.get(("c",), consistency=consistency)
            except Exception:
                errors += 1
                await asyncio.sleep(0.05)
                continue
            if e.versionstamp is not None and e.versionstamp != last:
                last = e.versionstamp
                seen.append((time.time(), e.versionstamp[:16]))
            await asyncio.sleep(max(0.0, every - (time.monotonic() - t0)))
    return seen, errors


async def poll_both(
    replica: str, primary: str, token: str, until: float, every: float
) -> tuple[Polled, Polled]:
    return await asyncio.gather(
        poll(replica, token, "eventual", until, every),
        poll(primary, token, "strong", until, every),
    )


def cpu_now(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of some processes, and of this one (the pollers)."""
    out = {name: sb.cpu_seconds(pid) for name, pid in pids.items() if pid is not None}
    t = os.times()
    out["pollers"] = t.user + t.system
    return out


async def measure(
    replica: sb.Node, primary: sb.Node, token: str, moto: sb.Moto, start: float, until: float,
    args: argparse.Namespace,
) -> Any:  # fmt: skip
    """Run both pollers until `until`; note moto's log offset, clock and CPU over the window."""
    task = asyncio.ensure_future(
        poll_both(replica.url, primary.url, token, until, args.poll_ms / 1000)
    )
    pids = {"primary": primary.proc.pid, "replica": replica.proc.pid, "moto": moto.pid}
    await asyncio.sleep(max(0.0, start - time.time()))
    off0 = (moto.log_offset(), time.monotonic(), sb.machine_busy(), cpu_now(pids))
    await asyncio.sleep(args.seconds)
    off1 = (moto.log_offset(), time.monotonic(), sb.machine_busy(), cpu_now(pids))
    return await task, off0, off1


def lags(records: list[list[Any]], seen: list[tuple[float, str]]) -> tuple[list[float], int]:
    """Per write: first time ["c"] showed its versionstamp or a later one, minus its ack."""
    stamps = [vs for _, vs in seen]
    out, unseen = [], 0
    for vs, ack_ms in records:
        i = bisect.bisect_left(stamps, vs[:16])
        if i == len(stamps):
            unseen += 1
        else:
            out.append(seen[i][0] - ack_ms / 1000)
    return out, unseen


def run_lag(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    children, work, token, moto = run.parts()
    rows = []
    for interval_text in args.intervals:
        interval = parse_duration(interval_text)
        prefix = f"lag-{interval_text}/"
        primary = sb.Node(
            children, work / f"lag-{interval_text}-primary.sqlite", token, moto,
            [*moto.s3_flags(prefix), "--s3-sync-interval", interval_text],
            f"lag-{interval_text}-primary",
        )  # fmt: skip
        replica = None
        try:
            sb.wait_generation(primary, every=0.05)
            replica = sb.Node(
                children, work / f"lag-{interval_text}-replica.sqlite", token, moto,
                ["--sync-from-s3", *moto.s3_flags(prefix), "--s3-poll-interval", interval_text],
                f"lag-{interval_text}-replica", wait_ready=True,
            )  # fmt: skip
            for i, rate in enumerate(args.rates):
                writer = sb.DenoWriter(
                    children, primary.url, token, seconds=args.seconds, rate=rate,
                    concurrency=args.concurrency, procs=args.procs, value_size=args.value_size,
                    counter=True, record=True, id_base=(i + 1) * 10_000_000,
                )  # fmt: skip
                start = writer.start_at / 1000
                until = start + args.seconds + 3 * interval + 3.0
                # The pollers start before the window, so the first writes are timed too.
                time.sleep(max(0.0, start - 1.0 - time.time()))
                (rep, pri), off0, off1 = asyncio.run(measure(
                    replica, primary, token, moto, start, until, args
                ))  # fmt: skip
                res = writer.results()
                window = moto.requests(off0[0], off1[0])
                span = off1[1] - off0[1]
                busy, total = off1[2][0] - off0[2][0], off1[2][1] - off0[2][1]
                machine = 100 * (os.cpu_count() or 1) * busy / total if total else math.nan
                rep_lags, rep_unseen = lags(res["records"], rep[0])
                pri_lags, pri_unseen = lags(res["records"], pri[0])
                row = {
                    "interval": interval_text, "interval_s": interval, "target_rate": rate,
                    "rate": res["writes"] / args.seconds, "writes": res["writes"],
                    "errors": res["errors"], "error_samples": res["error_samples"],
                    "replica_p50": sb.percentile(rep_lags, 0.5),
                    "replica_p99": sb.percentile(rep_lags, 0.99),
                    "replica_max": max(rep_lags, default=math.nan),
                    "replica_unseen": rep_unseen, "replica_poll_errors": rep[1],
                    "replica_changes": len(rep[0]),
                    "primary_p50": sb.percentile(pri_lags, 0.5),
                    "primary_p99": sb.percentile(pri_lags, 0.99),
                    "primary_unseen": pri_unseen, "primary_poll_errors": pri[1],
                    "puts_per_s": window.get("PUT", 0) / span,
                    "other_per_s": sum(v for k, v in window.items() if k != "PUT") / span,
                    "machine_cpu_pct": machine,
                    "cpu_pct": {k: 100 * (off1[3][k] - off0[3][k]) / span for k in off0[3]},
                }  # fmt: skip
                rows.append(row)
                print(f"  interval {interval_text:>5}, {rate:>5} writes/s: achieved "
                      f"{row['rate']:,.0f}/s, replica lag p50 {row['replica_p50']:.3f} s "
                      f"p99 {row['replica_p99']:.3f} s (primary {row['primary_p50'] * 1000:.1f} / "
                      f"{row['primary_p99'] * 1000:.1f} ms), {row['puts_per_s']:.2f} PUT/s; CPU "
                      + ", ".join(f"{k} {v:.0f} %" for k, v in row["cpu_pct"].items()),
                      flush=True)  # fmt: skip
        finally:
            for node in (replica, primary):
                if node is not None:
                    node.stop()
        for node in (replica, primary):
            if node is not None and node.log_problems():
                rows[-1].setdefault("log_problems", []).extend(node.log_problems())
    return rows


def lag_table(rows: list[dict[str, Any]]) -> str:
    out = [["sync / poll interval", "target writes/s", "achieved", "replica lag p50",
            "replica lag p99", "max", "primary p50 / p99 (baseline)", "primary PUT/s",
            "other S3 req/s", "machine CPU", "target"]]  # fmt: skip
    for r in rows:
        p99_target, put_target = TARGETS.get(r["interval_s"], (None, None))
        verdicts = []
        if p99_target is not None:
            ok = r["replica_p99"] <= p99_target and not r["replica_unseen"]
            verdicts.append(f"p99 <= {p99_target} s " + ("(met)" if ok else "(NOT met)"))
        if put_target is not None:
            ok = r["puts_per_s"] <= put_target
            verdicts.append(f"<= {put_target:g} PUT/s " + ("(met)" if ok else "(NOT met)"))
        out.append([
            r["interval"], f"{r['target_rate']:,}", f"{r['rate']:,.0f}",
            f"{r['replica_p50']:.3f} s", f"{r['replica_p99']:.3f} s", f"{r['replica_max']:.3f} s",
            f"{r['primary_p50'] * 1000:.1f} / {r['primary_p99'] * 1000:.1f} ms",
            f"{r['puts_per_s']:.2f}", f"{r['other_per_s']:.1f}", sb.pct(r["machine_cpu_pct"]),
            "; ".join(verdicts),
        ])  # fmt: skip
    return sb.table(out)


# -- b. bootstrap and c. checkout ---------------------------------------------------------------


def pitr(db: Path, moto: sb.Moto, *cmd: str, s3: bool = False) -> tuple[float, str]:
    extra = moto.s3_flags("boot/") if s3 else []
    return sb.run_cli(["--sqlite-path", str(db), "pitr", *cmd, *extra], moto)


def run_bootstrap_and_checkout(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> dict[str, Any]:
    children, work, token, moto = run.parts()
    out: dict[str, Any] = {}
    db = work / "boot-primary.sqlite"
    print(f"  building {args.keys:,} keys in-process ...", flush=True)
    out["build_s"] = sb.build_big_db(db, args.keys, args.value_size)
    primary = sb.Node(children, db, token, moto, moto.s3_flags("boot/"), "boot-primary")
    try:
        out["snapshot_ship_s"] = sb.wait_generation(primary)
        sizes = moto.object_sizes("boot/")
        out["snapshot_objects"] = sum(1 for k in sizes if "/snapshots/" in k)
        out["snapshot_bytes"] = sum(v for k, v in sizes.items() if "/snapshots/" in k)
        print(f"  built in {out['build_s']:.1f} s; snapshot shipped in "
              f"{out['snapshot_ship_s']:.1f} s", flush=True)  # fmt: skip

        # b. bootstrap, then the baseline: a restore of the same generation.
        rdb = work / "boot-replica.sqlite"
        replica = sb.Node(children, rdb, token, moto, ["--sync-from-s3", *moto.s3_flags("boot/")],
                          "boot-replica")  # fmt: skip
        out["bootstrap_s"] = replica.wait_ready(every=0.02)
        replica.stop()
        out["replica_log_problems"] = replica.log_problems()
        out["replica_keys"], out["base_digest"] = sb.kv_digest(rdb)
        print(f"  replica ready after {out['bootstrap_s']:.1f} s with "
              f"{out['replica_keys']:,} keys", flush=True)  # fmt: skip
        restored = work / "boot-restored.sqlite"
        out["restore_s"], _ = pitr(restored, moto, "restore", s3=True)
        out["restored_keys"], restored_digest = sb.kv_digest(restored)
        out["bootstrap_match"] = restored_digest == out["base_digest"]
        restored.unlink()
        if args.skip_checkout:
            return out

        # c. checkout across the log entries written now.
        out["load"] = asyncio.run(sb.load_log_entries(
            primary.url, token, args.log_entries, 100, args.keys, args.value_size
        ))  # fmt: skip
        out["drain_s"] = sb.wait_backlog_zero(db, timeout=300)
        out["primary_keys"], out["primary_digest"] = sb.kv_digest(db)
    finally:
        primary.stop()
    out["primary_log_problems"] = primary.log_problems()
    _, info = pitr(rdb, moto, "info")
    base = info.strip().rsplit(" ", 1)[-1]
    out["sync_s"], synced = pitr(rdb, moto, "sync", s3=True)
    out["pending"] = int(synced.split(";")[1].split()[0])
    _, listing = pitr(rdb, moto, "list")
    latest = listing.split("\t", 1)[0]
    out["points"] = len(listing.splitlines())
    print(
        f"  {out['load']['entries']:,} entries written in {out['load']['seconds']:.1f} s; "
        f"pitr sync {out['sync_s']:.1f} s, {out['pending']:,} entries pending",
        flush=True,
    )

    copy = work / "baseline-copy.sqlite"
    shutil.copyfile(rdb, copy)
    out["baseline_apply_s"] = baseline_apply(copy)
    copy.unlink()

    out["forward_s"], fwd = pitr(rdb, moto, "checkout", latest)
    out["forward_keys"], fwd_digest = sb.kv_digest(rdb)
    out["forward_match"] = fwd_digest == out["primary_digest"]
    out["back_s"], back = pitr(rdb, moto, "checkout", base)
    out["back_keys"], back_digest = sb.kv_digest(rdb)
    out["back_match"] = back_digest == out["base_digest"]
    out["forward_out"], out["back_out"] = fwd.strip(), back.strip()
    print(f"  checkout forward {out['forward_s']:.1f} s ({out['forward_keys']:,} keys, "
          f"{'match' if out['forward_match'] else 'MISMATCH'}), back {out['back_s']:.1f} s "
          f"({out['back_keys']:,} keys, {'match' if out['back_match'] else 'MISMATCH'})",
          flush=True)  # fmt: skip
    return out


def baseline_apply(path: Path) -> float:
    """The pending redo entries applied with one INSERT OR REPLACE each, one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute(
            "select k, v, v_encoding, versionstamp12, expiration_ms from denokv_tt_redo "
            "order by versionstamp12"
        ).fetchall()
        t0 = time.monotonic()
        conn.execute("begin immediate")
        conn.executemany(
            "insert or replace into kv (k, v, v_encoding, version, seq, expiration_ms) "
            "values (?, ?, ?, ?, 0, ?)",
            [(k, v, enc, version_of(vs), exp) for k, v, enc, vs, exp in rows],
        )
        conn.execute("commit")
        return time.monotonic() - t0
    finally:
        conn.close()


def boot_table(r: dict[str, Any], args: argparse.Namespace) -> str:
    met = r["bootstrap_s"] <= 60 and r["replica_keys"] == args.keys and r["bootstrap_match"]
    rows = [["step", "seconds", "note"]]
    rows.append(["replica start -> /readyz 200", f"{r['bootstrap_s']:.1f}",
                 f"{r['replica_keys']:,} keys; target <= 60 s " + ("(met)" if met else
                                                                   "(NOT met)")])  # fmt: skip
    rows.append(["baseline: pitr restore of the same generation", f"{r['restore_s']:.1f}",
                 f"{r['restored_keys']:,} keys, same digest: "
                 + ("yes" if r["bootstrap_match"] else "NO")])  # fmt: skip
    rows.append(["(setup) build in-process", f"{r['build_s']:.1f}",
                 f"{args.keys:,} keys x {args.value_size} B values"])  # fmt: skip
    rows.append(
        [
            "(setup) snapshot shipped",
            f"{r['snapshot_ship_s']:.1f}",
            f"{r['snapshot_objects']} objects, {r['snapshot_bytes'] / 1e6:.1f} MB",
        ]
    )
    return sb.table(rows)


def checkout_table(r: dict[str, Any]) -> str:
    rows = [["step", "seconds", "note"]]
    rows.append(
        [
            "pitr sync (fetch into the redo log)",
            f"{r['sync_s']:.1f}",
            f"{r['pending']:,} entries pending, {r['points']:,} recovery points",
        ]
    )
    rows.append(["pitr checkout latest (forward)", f"{r['forward_s']:.1f}",
                 f"{r['forward_keys']:,} keys, equal to the primary: "
                 + ("yes" if r["forward_match"] else "NO")])  # fmt: skip
    rows.append(["pitr checkout bootstrap point (back)", f"{r['back_s']:.1f}",
                 f"{r['back_keys']:,} keys, equal to the snapshot: "
                 + ("yes" if r["back_match"] else "NO")])  # fmt: skip
    rows.append(["baseline: plain INSERT OR REPLACE of the entries", f"{r['baseline_apply_s']:.1f}",
                 "one transaction, in-process, no undo log"])  # fmt: skip
    return sb.table(rows)


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10, help="write window per lag row")
    p.add_argument("--rates", default="100,1000", help="paced writes/s for part a")
    p.add_argument("--intervals", default="1s,200ms", help="sync = poll intervals for part a")
    p.add_argument("--poll-ms", type=float, default=5, help="how often the lag pollers read")
    p.add_argument("--procs", type=int, default=2, help="Deno writer processes")
    p.add_argument("--concurrency", type=int, default=32, help="loops per writer process")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=1_000_000, help="database size for b and c")
    p.add_argument("--log-entries", type=int, default=100_000, help="entries for part c")
    p.add_argument("--skip-lag", action="store_true")
    p.add_argument("--skip-bootstrap", action="store_true", help="skip b and c")
    p.add_argument("--skip-checkout", action="store_true", help="skip c")
    sb.BenchRun.add_options(p)
    args = p.parse_args()
    args.rates = [int(x) for x in args.rates.split(",") if x]
    args.intervals = [x for x in args.intervals.split(",") if x]

    t_start = time.monotonic()
    with sb.BenchRun("replica", args) as run:
        if not args.skip_lag:
            print("a. replication lag", flush=True)
            run.report["lag"] = run_lag(run, args)
        if not args.skip_bootstrap:
            print("b. bootstrap" + ("" if args.skip_checkout else " and c. checkout"), flush=True)
            run.report["boot"] = run_bootstrap_and_checkout(run, args)
    report, background = run.report, run.background

    problems = []
    print()
    if "lag" in report:
        print(f"a. replication lag, {args.seconds:g} s per row, pollers every {args.poll_ms:g} ms")
        print(lag_table(report["lag"]))
        print()
        for r in report["lag"]:
            where = f"lag {r['interval']} {r['target_rate']}/s"
            if r["errors"]:
                problems.append(f"{where}: {r['errors']} write errors {r['error_samples']}")
            if r["replica_unseen"] or r["primary_unseen"]:
                problems.append(f"{where}: writes never seen: replica {r['replica_unseen']}, "
                                f"primary {r['primary_unseen']}")  # fmt: skip
            if r.get("log_problems"):
                problems.append(f"{where}: server logs {r['log_problems']}")
    if "boot" in report:
        r = report["boot"]
        print(f"b. replica bootstrap, {args.keys:,} keys")
        print(boot_table(r, args))
        print()
        if r["replica_keys"] != args.keys or not r["bootstrap_match"]:
            problems.append("bootstrap: the replica's keys differ from the snapshot")
        for name in ("replica_log_problems", "primary_log_problems"):
            if r.get(name):
                problems.append(f"{name}: {r[name]}")
        if "forward_s" in r:
            print(f"c. checkout across {r['pending']:,} log entries "
                  f"({r['load']['writes']} writes x 100 sets)")  # fmt: skip
            print(checkout_table(r))
            print()
            if not r["forward_match"] or not r["back_match"]:
                problems.append("checkout: the replica file does not match after a checkout")
    for line in problems:
        print("PROBLEM:", line)
    if background > 20:
        print(f"WARNING: other processes used {background:.0f} % CPU before the run")
    print(f"total time {time.monotonic() - t_start:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
