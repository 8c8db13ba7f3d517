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
from collections.abc import Awaitable, Callable
from typing import Any

from timemachine import shipper as sh

variant = sys.argv.pop(1)
if variant == "capture-only":

    async def never(self: sh.Shipper, through: bytes | None = None) -> int:
        return 0

    setattr(sh.Shipper, "ship_pending", never)  # noqa: B010 (patching a method on purpose)
elif variant != "stock":
    raise SystemExit(f"unknown variant {variant}")

timing_log = os.environ.get("DENOKV_BENCH_TIMING_LOG")
if timing_log:
    from replica import follower as fo

    def timed(cls: type, name: str, what: str, log_path: str = timing_log) -> None:
        original_fn: Callable[..., Awaitable[Any]] = getattr(cls, name)

        async def wrapper(self: object, *a: Any, **kw: Any) -> Any:
            t0 = time.time()
            try:
                return await original_fn(self, *a, **kw)
            finally:
                with open(log_path, "a") as fh:
                    fh.write(
                        json.dumps({"what": what, "start": t0, "seconds": time.time() - t0}) + "\n"
                    )

        setattr(cls, name, wrapper)

    timed(sh.Shipper, "sync_once", "shipper.sync_once")
    timed(sh.Shipper, "_upload_segment", "shipper.upload_segment")
    timed(fo.Follower, "sync", "follower.sync")

from cli.main import main  # noqa: E402 (after the patches above)

sys.exit(main())
