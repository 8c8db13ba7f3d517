"""Probe: py-spy profile of `denokv serve` answering snapshot_read under the raw HTTP load.

    python -m bench.probes.front_profile OUT.txt [--http-server granian] [--proto http1|h2c]
                                        [--path /v2/snapshot_read] [--seconds 8]
                                        [--load deno|h2load]

The server runs as one process (`--processes 1`). `--load h2load` drives it
with h2load (16 connections x 16 streams, one fixed body; see
bench/h2load_reads.py) instead of the Deno loader, which needs less CPU.

Writes py-spy's collapsed stacks to OUT.txt and prints the functions with the
most samples (self and inclusive) over all threads; a sample with no Python
frame (empty name) is a granian Rust thread at work, unless --native names it.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bank import BANK_CLIENT, HTTP_LOAD, INITIAL, snapshot_read_bodies
from bench.harness import Children, run_deno_json, start_deno, start_denokv
from bench.latency import DATA_HEADERS, TOKEN


def summarize(collapsed: Path, top: int = 30) -> None:
    self_count: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or ("MainThread" not in frames[0] and "process" not in frames[0]):
            pass
        count = int(n)
        total += count
        self_count[frames[-1]] += count
        for f in set(frames[1:]):
            incl[f] += count
    print(f"{total} samples")
    print("-- self --")
    for f, samples in self_count.most_common(top):
        print(f"{100 * samples / total:5.1f} %  {f}")
    print("-- inclusive --")
    for f, samples in incl.most_common(top):
        print(f"{100 * samples / total:5.1f} %  {f}")


def h2load_loader(children: Children, work: Path, url: str, args: argparse.Namespace) -> Any:
    """h2load reading ["account", 0] for the whole profile, warm-up included."""
    from bench.h2load_reads import READ_BODY, h2load_cmd

    body = work / "read.bin"
    body.write_bytes(READ_BODY)
    load = argparse.Namespace(connections=16, streams=16, h2load_threads=1,
                              seconds=args.seconds + 3)  # fmt: skip
    cmd = h2load_cmd(url, body, args.proto, load)
    return children.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--http-server", default="granian")
    p.add_argument("--proto", default="http1")
    p.add_argument("--path", default="/v2/snapshot_read")
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--native", action="store_true", help="include Rust/C frames (py-spy --native)")
    p.add_argument("--load", choices=("deno", "h2load"), default="deno")
    args = p.parse_args()
    children = Children()
    with tempfile.TemporaryDirectory(prefix="probe-front-") as tmp:
        work = Path(tmp)
        try:
            one = 1 if args.http_server == "granian" else None
            srv = start_denokv(children, work / "p.sqlite", TOKEN, args.http_server, [], one)
            init = {"mode": "init", "target": srv.url, "accounts": 1000, "initial": INITIAL}
            run_deno_json(children, BANK_CLIENT, init, TOKEN, 120)
            config = {"url": srv.url + args.path, "headers": DATA_HEADERS,
                      "bodies": snapshot_read_bodies(1000), "seconds": args.seconds + 3,
                      "concurrency": 64, "http2": args.proto == "h2c"}  # fmt: skip
            if args.load == "h2load":
                loader = h2load_loader(children, work, srv.url, args)
            else:
                loader = start_deno(children, HTTP_LOAD, config, TOKEN)
            time.sleep(2)
            subprocess.run(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(srv.proc.pid), "--duration", str(int(args.seconds)), "--rate", "250",
                 "--format", "raw", "--output", args.out,
                 *(["--native"] if args.native else ["--nonblocking"])],
                check=False, capture_output=True,
            )  # fmt: skip
            loader.communicate(timeout=60)
        finally:
            children.stop_all()
    summarize(Path(args.out))


if __name__ == "__main__":
    main()
