"""Probe: does the shipper start new generations and run retention under a steady load?

    python -m bench.probes.rotation [VARIANT] [RATE] [SECONDS]

A primary with `--s3-snapshot-interval 3s` takes paced writes at RATE for SECONDS
(Deno writer); prints the generations started and the S3 requests by method.
With the stock shipper at a few thousand writes/s, one sync pass never ends
while the load lasts, so no new generation starts and retention never runs.
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import s3bench as sb

variant = sys.argv[1] if len(sys.argv) > 1 else "stock"
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 5000
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 12
work = Path(tempfile.mkdtemp(prefix="probe-"))
children = sb.Children()
moto = sb.Moto(work).start()
token = sb.new_token()
try:
    node = sb.Node(
        children, work / "p.sqlite", token, moto,
        [*moto.s3_flags("p/"), "--s3-snapshot-interval", "3s"], "p",
        launcher=[sys.executable, "-m", "bench.probes.launch_variant", variant],
    )  # fmt: skip
    while sb.metric(node.metrics(), "denokv_s3_generations") < 1:
        time.sleep(0.05)
    w = sb.DenoWriter(children, node.url, token, seconds=seconds, rate=rate, concurrency=32,
                      procs=2)  # fmt: skip
    w.wait_start()
    off0, g0 = moto.log_offset(), sb.metric(node.metrics(), "denokv_s3_generations")
    time.sleep(seconds)
    off1, g1 = moto.log_offset(), sb.metric(node.metrics(), "denokv_s3_generations")
    res = w.results()
    print(
        f"variant {variant}: {res['rate']:,.0f} writes/s for {seconds:g} s with "
        f"--s3-snapshot-interval 3s: {g1 - g0:.0f} generations started during the load "
        f"(expected about {seconds / 3:.0f}); S3 requests {moto.requests(off0, off1)}"
    )
finally:
    children.stop_all()
    moto.stop()
    shutil.rmtree(work, ignore_errors=True)
