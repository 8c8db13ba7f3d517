"""Python client benchmarks.

1. Per-call cost of the embedded client (`open_kv(file)`: get and set through
   the same engine the server uses) against raw `sqlite3` doing the same SQL on
   a file with the same settings, measured in the same run.
2. The bank workload (bench/bank.py) driven by the Python client over KV
   Connect: many concurrent asyncio tasks in one process against a real
   `denokv serve`, printed beside the Deno-client figures when bank.py's
   `--json-out` file is given.

    .venv/bin/python -m bench.client [--seconds 10] [--deno-json bench/out/bank.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import denokv
from denokv.keys import encode_key
from denokv.values import encode_value
from tests.support.paths import ROOT
from tests.support.ports import free_port

ACCOUNTS = 10_000


def embedded_vs_sqlite(n: int, tmp: Path) -> dict[str, float]:
    async def client_side() -> tuple[float, float]:
        async with denokv.open_kv(tmp / "client.sqlite") as kv:
            start = time.perf_counter()
            for i in range(n):
                await kv.set(["k", i % 1000], i)
            sets = n / (time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(n):
                await kv.get(["k", i % 1000])
            gets = n / (time.perf_counter() - start)
        return sets, gets

    sets, gets = asyncio.run(client_side())

    conn = sqlite3.connect(tmp / "raw.sqlite", isolation_level=None)
    conn.execute("pragma journal_mode = wal")
    conn.execute("pragma synchronous = full")
    conn.execute("create table kv (k blob primary key, v blob, v_encoding int, version int,"
                 " expiration_ms int default -1) without rowid")  # fmt: skip
    value = encode_value(1)[0]
    keys = [encode_key(["k", i]) for i in range(1000)]
    start = time.perf_counter()
    for i in range(n):
        conn.execute("begin immediate")
        conn.execute(
            "insert into kv (k, v, v_encoding, version) values (?, ?, 1, ?) on conflict(k) do "
            "update set v = excluded.v, version = excluded.version",
            (keys[i % 1000], value, i),
        )
        conn.execute("commit")
    raw_sets = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(n):
        conn.execute("select k, v, v_encoding, version from kv where k >= ? and k < ? limit 1",
                     (keys[i % 1000], keys[i % 1000] + b"\x00")).fetchall()  # fmt: skip
    raw_gets = n / (time.perf_counter() - start)
    conn.close()
    return {"client_set": sets, "raw_set": raw_sets, "client_get": gets, "raw_get": raw_gets}


async def bank(url: str, token: str, seconds: float, readers: int, writers: int) -> dict[str, Any]:
    async with denokv.open_kv(url, access_token=token) as kv:
        for start in range(0, ACCOUNTS, 500):
            op = kv.atomic()
            for i in range(start, min(start + 500, ACCOUNTS)):
                op.set(["account", i], 1000)
            await op.commit()
        stop_at = time.monotonic() + seconds
        stats: dict[str, Any] = {
            "reads": 0, "transfers": 0, "conflicts": 0, "read_lat": [], "xfer_lat": []
        }  # fmt: skip

        async def reader() -> None:
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                await kv.get(["account", random.randrange(ACCOUNTS)])
                stats["read_lat"].append(time.perf_counter() - t)
                stats["reads"] += 1

        async def writer() -> None:
            while time.monotonic() < stop_at:
                a, b = random.sample(range(ACCOUNTS), 2)
                t = time.perf_counter()
                ea, eb = await kv.get_many([["account", a], ["account", b]])
                amount = random.randint(1, 10)
                res = await (kv.atomic().check(ea, eb).set(ea.key, ea.value - amount)
                             .set(eb.key, eb.value + amount).commit())  # fmt: skip
                stats["xfer_lat"].append(time.perf_counter() - t)
                stats["transfers" if res.ok else "conflicts"] += 1

        tasks = [reader() for _ in range(readers)] + [writer() for _ in range(writers)]
        await asyncio.gather(*tasks)
        total = 0
        async for e in kv.list(prefix=["account"]):
            total += e.value
        stats["balance_ok"] = total == ACCOUNTS * 1000
    return stats


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--deno-json", type=Path, help="bank.py --json-out file to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        calls = embedded_vs_sqlite(args.calls, tmp)
        print("Embedded client vs raw sqlite3 (same file settings: WAL, synchronous=full)")
        print(f"{'operation':<10} {'client/s':>10} {'sqlite3/s':>10} {'ratio':>6}")
        for op in ("set", "get"):
            c, r = calls[f"client_{op}"], calls[f"raw_{op}"]
            print(f"{op:<10} {c:>10.0f} {r:>10.0f} {c / r:>6.2f}")
        token = secrets.token_urlsafe(18)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "--sqlite-path", str(tmp / "bank.sqlite"), "serve",
             "--addr", f"127.0.0.1:{port}"],
            cwd=ROOT, env={**os.environ, "DENO_KV_ACCESS_TOKEN": token},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.05)
            stats = asyncio.run(bank(f"http://127.0.0.1:{port}", token, args.seconds,
                                     args.readers, args.writers))  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)
    s = args.seconds
    print(f"\nBank workload through the Python client ({args.readers} reader and "
          f"{args.writers} writer tasks, one process, {s:.0f} s)")  # fmt: skip
    rows = [
        ("reads/s", stats["reads"] / s),
        ("transfers/s", stats["transfers"] / s),
        ("conflicts/s", stats["conflicts"] / s),
        ("read p50 ms", pct(stats["read_lat"], 0.5)),
        ("read p99 ms", pct(stats["read_lat"], 0.99)),
        ("transfer p50 ms", pct(stats["xfer_lat"], 0.5)),
        ("transfer p99 ms", pct(stats["xfer_lat"], 0.99)),
    ]
    deno = json.loads(args.deno_json.read_text()) if args.deno_json else None
    print(f"{'metric':<16} {'python client':>14}" + (f" {'deno clients':>14}" if deno else ""))
    for name, value in rows:
        line = f"{name:<16} {value:>14.1f}"
        if deno:
            line += f" {_deno_figure(deno, name):>14}"
        print(line)
    print(f"balance conserved: {stats['balance_ok']}")
    return 0 if stats["balance_ok"] else 1


def _deno_figure(deno: dict[str, Any], name: str) -> str:
    server = deno.get("server", deno)
    keys = {"reads/s": "reads_per_s", "transfers/s": "transfers_per_s",
            "conflicts/s": "conflicts_per_s", "read p50 ms": "read_p50_ms",
            "read p99 ms": "read_p99_ms", "transfer p50 ms": "transfer_p50_ms",
            "transfer p99 ms": "transfer_p99_ms"}  # fmt: skip
    value = server.get(keys[name])
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


if __name__ == "__main__":
    sys.exit(main())
