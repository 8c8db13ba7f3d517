"""Probe: how long the primary's sync passes and the replica's polls take under a paced load.

    python -m bench.probes.lag_timing [VARIANT] [RATE] [INTERVAL]

Primary and replica both run through bench/probes/launch_variant.py (VARIANT applies to
the primary's shipper) with DENOKV_BENCH_TIMING_LOG set; prints the distribution
of sync_once / upload / follower.sync durations and the gaps between passes.
"""

import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import s3bench as sb

variant = sys.argv[1] if len(sys.argv) > 1 else "stock"
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 1000
interval = sys.argv[3] if len(sys.argv) > 3 else "200ms"
work = Path(tempfile.mkdtemp(prefix="probe-"))
logs = {"primary": work / "primary.timing", "replica": work / "replica.timing"}
children = sb.Children()
moto = sb.Moto(work).start()
token = sb.new_token()
launcher = [sys.executable, "-m", "bench.probes.launch_variant"]
try:
    os.environ["DENOKV_BENCH_TIMING_LOG"] = str(logs["primary"])
    primary = sb.Node(
        children,
        work / "p.sqlite",
        token,
        moto,
        [*moto.s3_flags("p/"), "--s3-sync-interval", interval],
        "p",
        launcher=[*launcher, variant],
    )
    while sb.metric(primary.metrics(), "denokv_s3_generations") < 1:
        time.sleep(0.05)
    os.environ["DENOKV_BENCH_TIMING_LOG"] = str(logs["replica"])
    replica = sb.Node(
        children,
        work / "r.sqlite",
        token,
        moto,
        ["--sync-from-s3", *moto.s3_flags("p/"), "--s3-poll-interval", interval],
        "r",
        wait_ready=True,
        launcher=[*launcher, "stock"],
    )
    del os.environ["DENOKV_BENCH_TIMING_LOG"]
    w = sb.DenoWriter(
        children, primary.url, token, seconds=10, rate=rate, concurrency=32, procs=2, counter=True
    )
    start = w.wait_start()
    b0 = sb.machine_busy()
    time.sleep(10)
    b1 = sb.machine_busy()
    w.results()
    time.sleep(1)
finally:
    children.stop_all()
    moto.stop()
print(
    f"variant {variant}, {rate:g} writes/s, interval {interval}, machine CPU "
    f"{100 * (os.cpu_count() or 1) * (b1[0] - b0[0]) / (b1[1] - b0[1]):.0f} %"
)
for who, path in logs.items():
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows = [r for r in rows if start + 1 <= r["start"] <= start + 10]
    for what in sorted({r["what"] for r in rows}):
        d = [r["seconds"] * 1000 for r in rows if r["what"] == what]
        starts = [r["start"] for r in rows if r["what"] == what]
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
        print(
            f"  {who:7} {what:26} n={len(d):4}  ms p50 {sb.percentile(d, 0.5):6.1f}  p99 "
            f"{sb.percentile(d, 0.99):6.1f}  max {max(d):6.1f}   period p50 "
            f"{sb.percentile(gaps, 0.5):6.1f} max {max(gaps, default=0):6.1f}"
        )
shutil.rmtree(work, ignore_errors=True)
