"""Probe: py-spy profile of a primary under the unpaced load (backup on unless --off).

python -m bench.probes.profile OUT.txt [--off] [--variant=stock|capture-only]
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import s3bench as sb

off = "--off" in sys.argv
variant = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--variant=")), "stock")
out = Path(sys.argv[1])
work = Path(tempfile.mkdtemp(prefix="probe-"))
children = sb.Children()
moto = sb.Moto(work).start()
token = sb.new_token()
try:
    args = [] if off else moto.s3_flags("p/")
    node = sb.Node(
        children,
        work / "p.sqlite",
        token,
        moto,
        args,
        "p",
        launcher=[sys.executable, "-m", "bench.probes.launch_variant", variant],
    )
    if not off:
        while sb.metric(node.metrics(), "denokv_s3_generations") < 1:
            time.sleep(0.1)
    m0 = node.metrics()
    w = sb.DenoWriter(children, node.url, token, seconds=14, rate=0, concurrency=32, procs=2)
    w.wait_start()
    time.sleep(2)
    subprocess.run(
        [
            str(sb.ROOT / ".venv/bin/py-spy"),
            "record",
            "-p",
            str(node.proc.pid),
            "-d",
            "10",
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
            "--threads",
            "--nonblocking",
        ],
        check=False,
        capture_output=True,
    )
    res = w.results()
    m1 = node.metrics()
    print(
        "rate",
        res["rate"],
        "segments",
        sb.metric(m1, "denokv_s3_segments_shipped") - sb.metric(m0, "denokv_s3_segments_shipped"),
        "commits",
        sb.metric(m1, "denokv_commits") - sb.metric(m0, "denokv_commits"),
    )
finally:
    children.stop_all()
    moto.stop()
    shutil.rmtree(work, ignore_errors=True)
