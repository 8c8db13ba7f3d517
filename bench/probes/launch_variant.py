"""Throw-away launcher for probes: `denokv` with the shipper patched (NOT the product).

    python -m bench.probes.launch_variant VARIANT <denokv arguments>

VARIANT:
  stock         no patch
  capture-only  redo capture on, but the shipper never ships (backlog grows)

With DENOKV_BENCH_TIMING_LOG=FILE, every Shipper.sync_once and Follower.sync
appends one JSON line {what, start, seconds} to FILE.
"""

import json
import os
import sys
import time

from timemachine import shipper as sh

variant = sys.argv.pop(1)
if variant == "capture-only":

    async def never(self, through=None):  # type: ignore[no-untyped-def]
        return 0

    sh.Shipper.ship_pending = never
elif variant != "stock":
    raise SystemExit(f"unknown variant {variant}")

timing_log = os.environ.get("DENOKV_BENCH_TIMING_LOG")
if timing_log:
    from replica import follower as fo

    def timed(cls, name, what):  # type: ignore[no-untyped-def]
        original_fn = getattr(cls, name)

        async def wrapper(self, *a, **kw):  # type: ignore[no-untyped-def]
            t0 = time.time()
            try:
                return await original_fn(self, *a, **kw)
            finally:
                with open(timing_log, "a") as fh:
                    fh.write(
                        json.dumps({"what": what, "start": t0, "seconds": time.time() - t0}) + "\n"
                    )

        setattr(cls, name, wrapper)

    timed(sh.Shipper, "sync_once", "shipper.sync_once")
    timed(sh.Shipper, "_upload_segment", "shipper.upload_segment")
    timed(fo.Follower, "sync", "follower.sync")

from cli.main import main  # noqa: E402 (after the patches above)

sys.exit(main())
