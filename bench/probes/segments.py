"""Probe: list the log segments a paced load produces (object name, entries, time)."""

import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import s3bench as sb
from tests.support.s3 import get_object
from timemachine.codec import decode_segment

rate = float(sys.argv[1]) if len(sys.argv) > 1 else 1000
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4
extra = sys.argv[3:]
work = Path(tempfile.mkdtemp(prefix="probe-"))
children = sb.Children()
moto = sb.Moto(work).start()
token = sb.new_token()
try:
    node = sb.Node(children, work / "p.sqlite", token, moto, moto.s3_flags("p/") + extra, "p")
    while sb.metric(node.metrics(), "denokv_s3_generations") < 1:
        time.sleep(0.1)
    w = sb.DenoWriter(children, node.url, token, seconds=seconds, rate=rate, concurrency=64)
    t0 = w.wait_start()
    res = w.results()
    sb.wait_backlog_zero(node.db)
    print("writes", res["writes"])
    for k in moto.keys("p/"):
        if "/logs/" not in k:
            continue
        body = get_object(moto.endpoint, sb.BUCKET, k)
        segment = decode_segment(body, k)
        print(
            f"{segment.timestamp_ms / 1000 - t0:8.3f}  {len(segment.entries):6d} entries"
            f"  {len(body):7d} B"
        )
finally:
    children.stop_all()
    moto.stop()
    shutil.rmtree(work, ignore_errors=True)
