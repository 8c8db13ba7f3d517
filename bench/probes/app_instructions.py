"""Probe: instructions the KV app executes per `snapshot_read`, counted, not timed.

    python -m bench.probes.app_instructions [--no-quickack]

Runs `bench.probes.app_cost` under valgrind's callgrind twice, with 500 and
2,500 requests, and divides the difference of the two instruction totals by
2,000: start-up cancels out. Unlike CPU time, the count does not move with
the neighbours of this VM (two runs of the same code agree within 0.5 %), so
it tells whether a change to the hot path helped when timings cannot. The
figure covers the KV app and the trivial app together (the trivial app's
share is about 1 %). Needs valgrind (Debian: `apt-get install -y valgrind`);
about 50 s.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

SMALL, LARGE = 500, 2500


def instructions(requests: int, extra: list[str]) -> int:
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "bench.probes.app_cost",
        "--requests", str(requests), "--repeats", "1", *extra,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction total in callgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--no-quickack", action="store_true", help="leave out the prompt ACK")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        print("SKIPPED: valgrind is not installed (apt-get install -y valgrind)")
        return
    extra = ["--no-quickack"] if args.no_quickack else []
    per_request = (instructions(LARGE, extra) - instructions(SMALL, extra)) / (LARGE - SMALL)
    print(f"snapshot_read + trivial app: {per_request:,.0f} instructions per request")


if __name__ == "__main__":
    main()
