"""Probe: unpaced write throughput for backup off / stock / patched shipper variants.

    python -m bench.probes.throughput [--seconds 10] [--rounds 2]
        [--variants off,stock,capture-only]

Each variant but `off` runs through bench/probes/launch_variant.py (see there); `off`
is a primary without backup. Not the product: for investigating the shipper.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import s3bench as sb

p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=10)
p.add_argument("--rounds", type=int, default=2)
p.add_argument("--variants", default="off,stock,capture-only")
p.add_argument("--sync-interval", default="1s")
a = p.parse_args()
work = Path(tempfile.mkdtemp(prefix="probe-"))
children = sb.Children()
moto = sb.Moto(work).start()
token = sb.new_token()
results: dict[str, list[float]] = {}
try:
    for rnd in range(a.rounds):
        for v in a.variants.split(","):
            args = (
                []
                if v == "off"
                else [*moto.s3_flags(f"{v}-{rnd}/"), "--s3-sync-interval", a.sync_interval]
            )
            launcher = [
                sys.executable,
                "-m",
                "bench.probes.launch_variant",
                "stock" if v == "off" else v,
            ]
            node = sb.Node(
                children,
                work / f"{v}-{rnd}.sqlite",
                token,
                moto,
                args,
                f"{v}-{rnd}",
                launcher=launcher,
            )
            try:
                if v != "off":
                    while sb.metric(node.metrics(), "denokv_s3_generations") < 1:
                        time.sleep(0.1)
                m0 = node.metrics()
                w = sb.DenoWriter(
                    children, node.url, token, seconds=a.seconds, rate=0, concurrency=32, procs=2
                )
                w.wait_start()
                c0 = node.cpu()
                time.sleep(a.seconds)
                c1 = node.cpu()
                res = w.results()
                m1 = node.metrics()
            finally:
                node.stop()
            seg = sb.metric(m1, "denokv_s3_segments_shipped") - sb.metric(
                m0, "denokv_s3_segments_shipped"
            )
            com = sb.metric(m1, "denokv_commits") - sb.metric(m0, "denokv_commits")
            results.setdefault(v, []).append(res["rate"])
            print(
                f"round {rnd} {v:13} {res['rate']:7,.0f} writes/s  "
                f"cpu {100 * (c1 - c0) / a.seconds:4.0f} %  "
                f"segments {seg:5.0f}  commits {com:6.0f}  errors {res['errors']}",
                flush=True,
            )
finally:
    children.stop_all()
    moto.stop()
    shutil.rmtree(work, ignore_errors=True)
base = sum(results.get("off", [0])) / max(1, len(results.get("off", [])))
for v, rs in results.items():
    m = sum(rs) / len(rs)
    print(f"{v:13} mean {m:7,.0f} writes/s  ratio to off {m / base if base else float('nan'):.2f}x")
