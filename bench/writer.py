"""What the writer's bounded units and component counters cost, with backup on.

Two parts, each against a real `denokv serve` primary shipping to moto:

* **sweep** — a file holding `--sweep-keys` (1,000,000) expired keys is served;
  the start-up sweep deletes them in batches while a Python client writes one
  key at a time. Printed: the sweep's duration and rate, how much longer the
  shipper took to ship its deletes, and the client's write latency during the
  sweep against the same client on the same server once the backlog is shipped
  (the baseline, same run).
* **readyz** — a primary whose S3 endpoint is closed, with a redo backlog of
  `--backlog` (100,000) rows, with 1 and 2 server processes (`--processes`):
  p50/p99 of `/readyz` and `/metrics`, round robin over 8 connections (so
  every process answers some), against `/healthz` on the same server.

    .venv/bin/python -m bench.writer [--sweep-keys N] [--backlog N] [--part sweep|readyz]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from bench.s3bench import BUCKET, BenchRun, Node, metric, percentile, table
from denokv import tables
from tests.support.ports import free_port


def build_expired(path: Path, keys: int) -> float:
    """A Deno KV file with `keys` rows that expired a minute ago; returns seconds."""
    t0 = time.monotonic()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("pragma journal_mode = wal")
    conn.execute("pragma synchronous = off")
    tables.migrate(conn)
    expired = int(time.time() * 1000) - 60_000
    with tables.transaction(conn):
        for start in range(0, keys, 50_000):
            tables.put_rows(
                conn,
                (
                    tables.KvRow(b"\x02e%08d\x00" % i, b"v" * 32, 3, 1, 0, expired)
                    for i in range(start, min(keys, start + 50_000))
                ),
            )
        tables.set_data_version(conn, 1)
    conn.close()
    return time.monotonic() - t0


async def timed_writes(url: str, token: str, until: Any, limit: int, tag: str) -> list[float]:
    """Sequential single-key writes until `until()` is true (or `limit`); latencies in ms."""
    import denokv

    latencies: list[float] = []
    async with denokv.open_kv(url, access_token=token) as kv:
        for i in range(limit):
            if until():
                break
            t0 = time.perf_counter()
            assert (await kv.set([tag, i], i)).ok
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def part_sweep(run: BenchRun, keys: int) -> dict[str, Any]:
    children, work, token, moto = run.parts()
    db = work / "sweep.sqlite"
    built = build_expired(db, keys)
    print(f"sweep: built {keys:,} expired keys in {built:.1f} s", flush=True)
    args = [
        "--s3-bucket", BUCKET, "--s3-prefix", "sweep/", "--s3-endpoint", moto.endpoint,
        "--s3-force-path-style",
    ]  # fmt: skip
    node = Node(children, db, token, moto, args, "sweep")
    started = time.monotonic()
    done_at: list[float] = []

    def swept() -> bool:
        if done_at:
            return True
        if metric(node.metrics(), "denokv_expired_keys") >= keys:
            done_at.append(time.monotonic())
            return True
        return False

    during = asyncio.run(timed_writes(node.url, token, swept, 1_000_000, "during"))
    while not swept():
        time.sleep(0.05)
    duration = done_at[0] - started
    # The baseline waits until the sweep's deletes are shipped and trimmed, so
    # nothing of the sweep runs beside it.
    drain_deadline = time.monotonic() + 600
    while metric(node.metrics(), "denokv_redo_backlog_entries") > 0:
        if time.monotonic() > drain_deadline:
            raise SystemExit("the sweep's redo backlog was not shipped within 600 s")
        time.sleep(0.2)
    drained = time.monotonic() - done_at[0]
    after = asyncio.run(
        timed_writes(node.url, token, lambda: False, max(200, len(during)), "after")
    )
    m = node.metrics()
    node.stop()
    problems = node.log_problems()
    return {
        "keys": keys,
        "sweep_seconds": duration,
        "keys_per_second": keys / duration,
        "batches": metric(m, "denokv_expiry_sweeps"),
        "shipped_after_s": drained,
        "writes_during": len(during),
        "during_p50_ms": percentile(during, 0.5),
        "during_p99_ms": percentile(during, 0.99),
        "during_max_ms": max(during, default=float("nan")),
        "after_p50_ms": percentile(after, 0.5),
        "after_p99_ms": percentile(after, 0.99),
        "log_problems": problems,
    }


async def backlog_load(url: str, token: str, rows: int) -> None:
    import denokv

    async with denokv.open_kv(url, access_token=token) as kv:
        for start in range(0, rows, 1000):
            op = kv.atomic()
            for i in range(start, min(rows, start + 1000)):
                op.set(["b", i], i)
            assert (await op.commit()).ok


def latencies_ms(url: str, path: str, n: int, connections: int = 8) -> list[float]:
    """`n` GETs of `path`, round robin over `connections` kept-alive connections.

    The kernel spreads the connections over the server's processes, so every
    process answers some; connecting is not timed.
    """
    import httpx

    clients = [httpx.Client(timeout=10) for _ in range(connections)]
    try:
        for client in clients:
            client.get(url + path)
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            clients[i % connections].get(url + path)
            out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        for client in clients:
            client.close()


def part_readyz(run: BenchRun, backlog: int, samples: int, processes: int) -> dict[str, Any]:
    children, work, token, _ = run.parts()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: shipping fails, the log grows
    args = ["--s3-bucket", BUCKET, "--s3-prefix", "ready/", "--s3-endpoint", closed,
            "--s3-force-path-style", "--processes", str(processes)]  # fmt: skip
    db = work / f"ready{processes}.sqlite"
    node = Node(children, db, token, None, args, f"readyz{processes}")
    asyncio.run(backlog_load(node.url, token, backlog))
    m = node.metrics()
    result: dict[str, Any] = {"backlog_rows": metric(m, "denokv_redo_backlog_entries")}
    for path in ("/healthz", "/readyz", "/metrics"):
        lat = latencies_ms(node.url, path, samples)
        result[path] = {"p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99)}
    node.stop()
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("sweep", "readyz", "all"), default="all")
    p.add_argument("--sweep-keys", type=int, default=1_000_000)
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--processes", default="1,2", help="server processes for the readyz part")
    BenchRun.add_options(p)
    args = p.parse_args()
    with BenchRun("writer", args) as run:
        if args.part in ("sweep", "all"):
            s = run.report["sweep"] = part_sweep(run, args.sweep_keys)
            print(table([
                ["sweep of", "seconds", "keys/s", "batches", "backlog shipped after"],
                [f"{s['keys']:,}", f"{s['sweep_seconds']:.1f}", f"{s['keys_per_second']:,.0f}",
                 f"{s['batches']:.0f}", f"{s['shipped_after_s']:.1f} s more"],
            ]))  # fmt: skip
            print(table([
                ["one set at a time", "writes", "p50 ms", "p99 ms", "max ms"],
                ["during the sweep", str(s["writes_during"]), f"{s['during_p50_ms']:.1f}",
                 f"{s['during_p99_ms']:.1f}", f"{s['during_max_ms']:.1f}"],
                ["after it (baseline)", "", f"{s['after_p50_ms']:.1f}",
                 f"{s['after_p99_ms']:.1f}", ""],
            ]))  # fmt: skip
        if args.part in ("readyz", "all"):
            rows = [["processes", "route", "p50 ms", "p99 ms"]]
            for n in [int(x) for x in args.processes.split(",")]:
                r = run.report[f"readyz_{n}"] = part_readyz(run, args.backlog, args.samples, n)
                print(f"{n} processes: redo backlog {r['backlog_rows']:,.0f} rows (S3 unreachable)")
                for path in ("/healthz", "/readyz", "/metrics"):
                    rows.append([str(n), path, f"{r[path]['p50_ms']:.2f}",
                                 f"{r[path]['p99_ms']:.2f}"])  # fmt: skip
            print(table(rows))
    print(json.dumps(run.report, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
