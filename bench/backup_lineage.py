"""Backup lineage benchmark (issue 10): memory of restore and bootstrap, and the S3
requests of a primary with the lease and lineage records on.

    .venv/bin/python -m bench.backup_lineage [--keys 1000000] [--value-size 900]
        [--log-entries 100000] [--idle-seconds 60] [--busy-seconds 30]
        [--busy-rate 200] [--skip-restore] [--skip-requests] [--json-out FILE] [--keep]

Everything runs against a local moto S3 server (127.0.0.1) started by the
script. Each part prints its baseline, measured in the same run, beside its
figures:

a. Restore. `--keys` keys of `--value-size` bytes (a 1 GB file by default) are
   written in-process, served by a primary with backup (the first
   generation's snapshot ships), then `--log-entries` log entries go through
   the server (atomic writes of 100 sets). Once the backlog is 0 the primary
   stops and `denokv pitr restore` runs as a child: wall time and peak RSS
   (`ru_maxrss` of that one child, from wait4). The restored file must hold
   exactly the primary's keys and values. Baseline: `VACUUM INTO` of the
   primary's file, also a child, timed and measured the same way. Target:
   peak RSS <= 256 MiB.
b. Replica bootstrap of the same backup: a replica on an empty file, from its
   start to /readyz 200 (snapshot loaded and the log applied), and its peak
   RSS (VmHWM). It must then hold exactly the primary's keys and values.
   Baselines: the restore of a, and `VACUUM INTO`.
c. S3 requests of a primary (sync interval 1 s, lease TTL 60 s, so renewed
   every 20 s): idle for `--idle-seconds`, then busy for `--busy-seconds`
   (a Deno process writing `--busy-rate` writes/s). Counted from moto's
   request log, by what they were for (log segments, lease, listings, ...).
   Baseline: one PUT per sync interval while busy, none while idle.

Exit status 1 when a check fails (digest mismatch, errors, PUTs above target).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import s3bench as sb

MIB = 1024 * 1024
RSS_TARGET_MIB = 256


# -- child processes measured one by one ------------------------------------------------------


def measured_run(cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 timeout: float = 1800) -> dict[str, Any]:  # fmt: skip
    """Run `cmd` to the end; its wall time, exit code and peak RSS (from wait4)."""
    with open(log, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=sb.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        busy0 = sb.machine_busy()
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - t0
        busy1 = sb.machine_busy()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": wall,
        "returncode": proc.returncode,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "machine_cpu_pct": machine_pct(busy0, busy1),
        "output": log.read_text(errors="replace")[-2000:],
    }


def machine_pct(b0: tuple[float, float], b1: tuple[float, float]) -> float:
    """Whole-machine CPU between two samples, in percent of one CPU."""
    return 100 * (os.cpu_count() or 1) * (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1])


def vmhwm_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def vacuum_baseline(db: Path, work: Path) -> dict[str, Any]:
    copy = work / "vacuum-copy.sqlite"
    code = (
        "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('vacuum into ?', (sys.argv[2],))"
    )
    out = measured_run([sys.executable, "-c", code, str(db), str(copy)], work / "vacuum.log")
    out["bytes"] = copy.stat().st_size
    copy.unlink()
    return out


# -- a. restore and b. bootstrap -----------------------------------------------------------------


def build_backup(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> dict[str, Any]:
    children, work, token, moto = run.parts()
    out: dict[str, Any] = {}
    db = work / "primary.sqlite"
    print(f"  building {args.keys:,} keys x {args.value_size} B in-process ...", flush=True)
    out["build_s"] = sb.build_big_db(db, args.keys, args.value_size, batch=args.build_batch)
    out["db_bytes"] = db.stat().st_size
    node = sb.Node(children, db, token, moto, moto.s3_flags("restore/"), "primary")
    try:
        out["snapshot_ship_s"] = sb.wait_generation(node, timeout=900, every=0.2)
        print(f"  {out['db_bytes'] / 1e9:.2f} GB built in {out['build_s']:.0f} s; snapshot "
              f"shipped in {out['snapshot_ship_s']:.0f} s", flush=True)  # fmt: skip
        out["load"] = asyncio.run(sb.load_log_entries(
            node.url, token, args.log_entries, 100, args.keys, args.value_size))  # fmt: skip
        out["drain_s"] = sb.wait_backlog_zero(db, timeout=600)
    finally:
        node.stop()
    out["log_problems"] = node.log_problems()
    out["keys"], out["digest"] = sb.kv_digest(db)
    sizes = moto.object_sizes("restore/")
    out["objects"] = len(sizes)
    out["object_bytes"] = sum(sizes.values())
    out["largest_object_bytes"] = max(sizes.values())
    return out


def run_restore(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> dict[str, Any]:
    work, moto = run.work, run.moto
    out: dict[str, Any] = {"backup": build_backup(run, args)}
    restored = work / "restored.sqlite"
    cmd = [sys.executable, "-m", "cli.main", "--sqlite-path", str(restored), "pitr", "restore",
           *moto.s3_flags("restore/")]  # fmt: skip
    out["restore"] = r = measured_run(cmd, work / "restore.log", sb.s3_env(moto.endpoint))
    out["restored_keys"], digest = sb.kv_digest(restored) if r["returncode"] == 0 else (0, "")
    out["match"] = digest == out["backup"]["digest"]
    restored.unlink(missing_ok=True)
    print(f"  pitr restore: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB "
          f"({'match' if out['match'] else 'MISMATCH'})", flush=True)  # fmt: skip
    out["vacuum"] = v = vacuum_baseline(work / "primary.sqlite", work)
    print(f"  VACUUM INTO: {v['seconds']:.1f} s, peak RSS {v['peak_rss_mib']:.0f} MiB", flush=True)
    return out


def run_bootstrap(
    run: sb.BenchRun,
    args: argparse.Namespace,
    backup: dict[str, Any],
) -> dict[str, Any]:
    children, work, token, moto = run.parts()
    db = work / "replica.sqlite"
    busy0 = sb.machine_busy()
    node = sb.Node(children, db, token, moto,
                   [*moto.s3_flags("restore/"), "--sync-from-s3"], "replica")  # fmt: skip
    out: dict[str, Any] = {}
    try:
        out["ready_s"] = node.wait_ready(timeout=1800, every=0.05)
        out["peak_rss_mib"] = vmhwm_mib(node.proc.pid)
        out["machine_cpu_pct"] = machine_pct(busy0, sb.machine_busy())
        out["cpu_s"] = node.cpu()
    finally:
        node.stop()
    out["log_problems"] = node.log_problems()
    out["keys"], digest = sb.kv_digest(db)
    out["match"] = digest == backup["digest"]
    print(f"  replica ready after {out['ready_s']:.1f} s, peak RSS {out['peak_rss_mib']:.0f} MiB "
          f"({'match' if out['match'] else 'MISMATCH'})", flush=True)  # fmt: skip
    return out


def memory_table(r: dict[str, Any], boot: dict[str, Any] | None) -> str:
    res, vac, b = r["restore"], r["vacuum"], r["backup"]
    target = f"target <= {RSS_TARGET_MIB} MiB " + (
        "(met)" if res["peak_rss_mib"] <= RSS_TARGET_MIB else "(NOT met)"
    )
    rows = [["step", "seconds", "peak RSS", "CPU s", "machine CPU", "note"]]
    rows.append(["pitr restore (CLI child)", f"{res['seconds']:.1f}",
                 f"{res['peak_rss_mib']:.0f} MiB", f"{res['cpu_s']:.1f}",
                 sb.pct(res["machine_cpu_pct"]),
                 f"{r['restored_keys']:,} keys, digest {'matches' if r['match'] else 'DIFFERS'}"
                 f"; {target}"])  # fmt: skip
    if boot is not None:
        rows.append(["replica start -> /readyz 200", f"{boot['ready_s']:.1f}",
                     f"{boot['peak_rss_mib']:.0f} MiB", f"{boot['cpu_s']:.1f}",
                     sb.pct(boot["machine_cpu_pct"]),
                     f"{boot['keys']:,} keys, digest "
                     f"{'matches' if boot['match'] else 'DIFFERS'} (VmHWM)"])  # fmt: skip
    rows.append(["baseline: VACUUM INTO (child)", f"{vac['seconds']:.1f}",
                 f"{vac['peak_rss_mib']:.0f} MiB", f"{vac['cpu_s']:.1f}",
                 sb.pct(vac["machine_cpu_pct"]),
                 f"local copy, {vac['bytes'] / 1e9:.2f} GB"])  # fmt: skip
    rows.append(["(setup) backup in S3", "", "", "", "",
                 f"{b['objects']} objects, {b['object_bytes'] / 1e6:.0f} MB, largest "
                 f"{b['largest_object_bytes'] / 1e6:.1f} MB"])  # fmt: skip
    rows.append(["(setup) build in-process", f"{b['build_s']:.0f}", "", "", "",
                 f"{b['db_bytes'] / 1e9:.2f} GB file"])  # fmt: skip
    rows.append(["(setup) snapshot shipped", f"{b['snapshot_ship_s']:.0f}", "", "", "", ""])
    rows.append(["(setup) log entries written", f"{b['load']['seconds']:.0f}", "", "", "",
                 f"{b['load']['entries']:,} entries, {b['load']['writes']:,} writes"])  # fmt: skip
    return sb.table(rows)


# -- c. S3 requests of an idle and a busy primary -----------------------------------------------


KINDS = (
    ("lease PUT", re.compile(r"PUT \S*lock\.json")),
    ("segment PUT", re.compile(r"PUT \S*/logs/")),
    ("snapshot PUT", re.compile(r"PUT \S*/(snapshots/|differential|lineage\.json)")),
    ("other PUT", re.compile(r"PUT ")),
    ("LIST", re.compile(r"GET \S*[?&](list-type|delimiter|prefix)=")),
    ("GET", re.compile(r"GET ")),
    ("DELETE", re.compile(r"(POST \S*\?delete|DELETE )")),
    ("other", re.compile(r"[A-Z]+ ")),
)
REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+ /' + sb.BUCKET + r'[/?][^" ]*)')


def request_kinds(moto: sb.Moto, start: int, end: int) -> dict[str, int]:
    with open(moto.log, "rb") as fh:
        fh.seek(start)
        text = fh.read(end - start).decode(errors="replace")
    counts = {name: 0 for name, _ in KINDS}
    for m in REQUEST.finditer(text):
        line = m.group(1)
        for name, pattern in KINDS:
            if pattern.match(line):
                counts[name] += 1
                break
    return counts


def run_requests(
    run: sb.BenchRun,
    args: argparse.Namespace,
) -> dict[str, Any]:
    children, work, token, moto = run.parts()
    db = work / "requests.sqlite"
    sb.build_big_db(db, 10_000, 100)
    node = sb.Node(children, db, token, moto, [*moto.s3_flags("requests/"),
                   "--s3-sync-interval", "1s", "--s3-lease-ttl", "60s"], "requests")  # fmt: skip
    out: dict[str, Any] = {}
    try:
        sb.wait_generation(node, timeout=900, every=0.2)
        time.sleep(3)  # past the start-up probe and the first passes
        off0 = moto.log_offset()
        time.sleep(args.idle_seconds)
        off1 = moto.log_offset()
        out["idle"] = request_kinds(moto, off0, off1)
        writer = sb.DenoWriter(children, node.url, token, seconds=args.busy_seconds,
                               rate=args.busy_rate, concurrency=8)  # fmt: skip
        writer.wait_start()
        off2, cpu0, busy0 = moto.log_offset(), node.cpu(), sb.machine_busy()
        time.sleep(args.busy_seconds)
        off3, cpu1, busy1 = moto.log_offset(), node.cpu(), sb.machine_busy()
        out["writes"] = writer.results()
        out["busy"] = request_kinds(moto, off2, off3)
        out["server_cpu_pct"] = 100 * (cpu1 - cpu0) / args.busy_seconds
        out["machine_cpu_pct"] = machine_pct(busy0, busy1)
    finally:
        node.stop()
    out["log_problems"] = node.log_problems()
    return out


def requests_table(r: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [["requests per second", f"idle ({args.idle_seconds:g} s)",
             f"busy ({args.busy_seconds:g} s, {r['writes']['rate']:.0f} writes/s)"]]  # fmt: skip
    for name, _ in KINDS:
        rows.append([name, f"{r['idle'][name] / args.idle_seconds:.3f}",
                     f"{r['busy'][name] / args.busy_seconds:.3f}"])  # fmt: skip
    puts = {w: sum(v for k, v in r[w].items() if k.endswith("PUT")) for w in ("idle", "busy")}
    rows.append(["all PUTs", f"{puts['idle'] / args.idle_seconds:.3f}",
                 f"{puts['busy'] / args.busy_seconds:.3f}"])  # fmt: skip
    rows.append(["baseline: PUTs at one per sync interval", "0 (nothing to ship)", "1.000"])
    rows.append(["baseline: lease renewals at TTL/3", f"{1 / 20:.3f}", f"{1 / 20:.3f}"])
    return sb.table(rows)


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    # 900 B: a row stays in its b-tree page; 1,000 B rows spill to overflow pages (4.7 GB file)
    p.add_argument("--value-size", type=int, default=900)
    p.add_argument("--build-batch", type=int, default=500, help="keys per in-process write")
    p.add_argument("--log-entries", type=int, default=100_000)
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--busy-seconds", type=float, default=30)
    p.add_argument("--busy-rate", type=float, default=200, help="writes/s while busy")
    p.add_argument("--skip-restore", action="store_true", help="skip a and b")
    p.add_argument("--skip-bootstrap", action="store_true", help="skip b")
    p.add_argument("--skip-requests", action="store_true", help="skip c")
    sb.BenchRun.add_options(p)
    args = p.parse_args()

    t_start, load0 = time.monotonic(), os.getloadavg()
    with sb.BenchRun("backup_lineage", args) as run:
        if not args.skip_restore:
            print("a. restore", flush=True)
            run.report["restore"] = run_restore(run, args)
            if not args.skip_bootstrap:
                print("b. replica bootstrap", flush=True)
                run.report["bootstrap"] = run_bootstrap(run, args, run.report["restore"]["backup"])
        if not args.skip_requests:
            print("c. S3 requests of an idle and a busy primary", flush=True)
            run.report["requests"] = run_requests(run, args)
        run.report["loadavg_before"], run.report["loadavg_after"] = load0, os.getloadavg()
    return report(run.report, args, run.background, time.monotonic() - t_start)


def report(rep: dict[str, Any], args: argparse.Namespace, background: float, took: float) -> int:
    problems = []
    print()
    if "restore" in rep:
        r = rep["restore"]
        print(f"a./b. restore and bootstrap of {args.keys:,} keys x {args.value_size} B "
              f"+ {args.log_entries:,} log entries")  # fmt: skip
        print(memory_table(r, rep.get("bootstrap")))
        print()
        if r["restore"]["returncode"] != 0 or not r["match"]:
            problems.append(f"restore: exit {r['restore']['returncode']}, match {r['match']}: "
                            f"{r['restore']['output'][-500:]}")  # fmt: skip
        if r["backup"]["log_problems"]:
            problems.append(f"restore: primary log {r['backup']['log_problems']}")
        boot = rep.get("bootstrap")
        if boot is not None and not boot["match"]:
            problems.append("bootstrap: the replica's keys differ from the primary's")
    if "requests" in rep:
        r = rep["requests"]
        print("c. S3 requests, sync interval 1 s, lease TTL 60 s")
        print(requests_table(r, args))
        print()
        busy_puts = sum(v for k, v in r["busy"].items() if k.endswith("PUT"))
        if busy_puts / args.busy_seconds > 1.1:
            problems.append(f"requests: {busy_puts / args.busy_seconds:.2f} PUT/s while busy")
        if r["writes"]["errors"] or r["log_problems"]:
            problems.append(f"requests: {r['writes']['errors']} write errors, "
                            f"server log {r['log_problems']}")  # fmt: skip
    for line in problems:
        print("PROBLEM:", line)
    before, after = rep["loadavg_before"], rep["loadavg_after"]
    print(f"machine: background CPU {background:.0f} % before the run; load average "
          f"{before[0]:.2f} before, {after[0]:.2f} after ({os.cpu_count()} CPUs)")  # fmt: skip
    print(f"total time {took:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
