"""Shared plumbing for bench/backup.py and bench/replica.py.

A local moto S3 server (tests/support/moto.py) with its request log, `denokv
serve` primaries and replicas as child processes, the Deno write load
(bench/kv_writer.ts), the in-process builder of big databases, and small
helpers (metrics, redo backlog, timed CLI runs, tables). Everything listens on
127.0.0.1 only; every child goes through `Children`, so a `finally:
children.stop_all()` ends them all.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# The `X as X` names are re-exported: the bench scripts reach them as `sb.X`.
from bench.bank_report import table as table
from bench.harness import Children as Children
from bench.harness import cpu_seconds as cpu_seconds
from bench.harness import deno_binary, deno_env
from bench.harness import machine_busy as machine_busy
from tests.support.moto import MotoServer
from tests.support.paths import ROOT as ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.s3 import create_bucket, list_keys, s3_client
from tests.support.s3 import s3_env as s3_env

BENCH = ROOT / "bench"
KV_WRITER = BENCH / "kv_writer.ts"
BUCKET = "denokv-bench"


# -- S3 ------------------------------------------------------------------------------


class Moto:
    """moto's S3 server with its request log, to count the PUTs a run made."""

    def __init__(self, work: Path) -> None:
        self.log = work / "moto.log"
        self.server = MotoServer(log_path=self.log)

    def start(self) -> Moto:
        self.server.start()
        create_bucket(self.endpoint, BUCKET)
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def pid(self) -> int | None:
        return self.server.proc.pid if self.server.proc else None

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def requests(self, start: int, end: int | None = None) -> dict[str, int]:
        """Requests logged between two offsets of the log, by method (PUT, GET, ...)."""
        with open(self.log, "rb") as fh:
            fh.seek(start)
            data = fh.read() if end is None else fh.read(end - start)
        counts: dict[str, int] = {}
        for m in re.finditer(rb'"(?:\x1b\[[0-9;]*m)*([A-Z]+) /' + BUCKET.encode() + rb"[/?]", data):
            method = m.group(1).decode()
            counts[method] = counts.get(method, 0) + 1
        return counts

    def keys(self, prefix: str) -> list[str]:
        return list_keys(self.endpoint, BUCKET, prefix)

    def object_sizes(self, prefix: str) -> dict[str, int]:
        paginator = s3_client(self.endpoint).get_paginator("list_objects_v2")
        out: dict[str, int] = {}
        for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", ()):
                out[obj["Key"]] = obj["Size"]
        return out

    def download_all(self, keys: list[str], threads: int = 16) -> int:
        """GET every object with `threads` threads; returns the bytes read."""
        from concurrent.futures import ThreadPoolExecutor

        client = s3_client(self.endpoint)

        def one(key: str) -> int:
            return len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(one, keys))

    def s3_flags(self, prefix: str) -> list[str]:
        return ["--s3-bucket", BUCKET, "--s3-prefix", prefix, "--s3-endpoint", self.endpoint,
                "--s3-force-path-style"]  # fmt: skip


# -- denokv processes ------------------------------------------------------------------


class Node:
    """One `denokv serve` child: a primary (with or without backup) or a replica."""

    def __init__(
        self,
        children: Children,
        db: Path,
        token: str,
        moto: Moto | None,
        args: list[str],
        name: str,
        wait_ready: bool = False,
        launcher: list[str] | None = None,
    ) -> None:
        self.children = children
        self.db = db
        self.port = free_port()
        self.log = db.parent / f"{name}.log"
        launcher = launcher or [sys.executable, "-m", "cli.main"]
        cmd = [*launcher, "--sqlite-path", str(db), "serve",
               "--addr", f"127.0.0.1:{self.port}", *args]  # fmt: skip
        self.cmd = cmd
        env = s3_env(moto.endpoint if moto else None)
        env["DENO_KV_ACCESS_TOKEN"] = token
        self.started = time.monotonic()
        with open(self.log, "ab") as fh:
            self.proc = children.popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, timeout=60)
        if wait_ready:
            self.wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=5) as resp:
                return bool(resp.status == 200)
        except (urllib.error.HTTPError, OSError):
            return False

    def wait_ready(self, timeout: float = 300, every: float = 0.05) -> float:
        """Wait for /readyz 200; returns seconds since the process was started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log.name}: exited with {self.proc.returncode}")
            if self.ready():
                return time.monotonic() - self.started
            time.sleep(every)
        raise TimeoutError(f"{self.url}/readyz not 200 within {timeout}s")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> int:
        return self.children.stop(self.proc, timeout=60)

    def log_problems(self) -> list[str]:
        text = self.log.read_text(errors="replace")
        keys = ("ERROR", "Traceback", "CRITICAL", "WARNING", "Exception")
        benign = ("Embedded server is experimental",)
        lines = text.splitlines()
        found = [ln for ln in lines if any(k in ln for k in keys)]
        return [ln for ln in found if not any(b in ln for b in benign)][:20]


def metric(m: dict[str, float], name: str) -> float:
    return m.get(name, m.get(name + "_total", math.nan))


def wait_generation(node: Node, timeout: float = 600, every: float = 0.1) -> float:
    """Wait until the primary finished its first generation (snapshot + differential);
    returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if node.proc.poll() is not None:
            raise RuntimeError(f"{node.log}: primary exited with {node.proc.returncode}")
        try:
            if metric(node.metrics(), "denokv_s3_generations") >= 1:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(every)
    raise TimeoutError("no backup generation within the timeout")


def redo_backlog(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        backlog: int = conn.execute("select count(*) from denokv_redo_log").fetchone()[0]
        return backlog
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def wait_backlog_zero(db: Path, timeout: float = 120, every: float = 0.05) -> float:
    """Wait until everything committed was shipped; returns the seconds waited."""
    t0 = time.monotonic()
    while redo_backlog(db):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"redo backlog of {db} not empty after {timeout}s")
        time.sleep(every)
    return time.monotonic() - t0


def run_cli(args: list[str], moto: Moto | None, timeout: float = 600) -> tuple[float, str]:
    """Run `python -m cli.main ARGS`; returns (wall seconds, stdout)."""
    env = s3_env(moto.endpoint if moto else None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, timeout=timeout, check=False,
    )  # fmt: skip
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"`denokv {' '.join(args)}` failed ({proc.returncode}):\n"
            f"{proc.stderr.decode(errors='replace')[-3000:]}"
        )
    return wall, proc.stdout.decode()


# -- the Deno write load ---------------------------------------------------------------------


def write_key_bytes() -> int:
    """Length of an encoded ["w", <number>] key, as the Deno writer writes it."""
    from denokv.keys import KvNumber, encode_key

    return len(encode_key(("w", KvNumber(1.0))))


class DenoWriter:
    """`procs` Deno processes of bench/kv_writer.ts sharing one window."""

    def __init__(
        self,
        children: Children,
        url: str,
        token: str,
        *,
        seconds: float,
        rate: float,
        concurrency: int,
        procs: int = 1,
        value_size: int = 100,
        counter: bool = False,
        record: bool = False,
        id_base: int = 0,
        start_delay: float = 3.0,
    ) -> None:
        self.children = children
        self.seconds = seconds
        self.start_at = int((time.time() + start_delay + 0.5 * procs) * 1000)
        self.procs = []
        for i in range(procs):
            config = {
                "url": url, "seconds": seconds, "startAt": self.start_at,
                "rate": rate / procs, "concurrency": concurrency, "valueSize": value_size,
                "idBase": id_base + i * 1_000_000_000, "counter": counter, "record": record,
            }  # fmt: skip
            cmd = [deno_binary(), "run", "--unstable-kv", "-A", str(KV_WRITER), json.dumps(config)]
            self.procs.append(children.popen(
                cmd, cwd=ROOT, env=deno_env(token), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ))  # fmt: skip

    def wait_start(self) -> float:
        """Sleep until the window opens; returns its start as time.time()."""
        time.sleep(max(0.0, self.start_at / 1000 - time.time()))
        return self.start_at / 1000

    def results(self, slack: float = 120) -> dict[str, Any]:
        parts = []
        for proc in self.procs:
            try:
                out, err = proc.communicate(timeout=self.seconds + slack)
            except subprocess.TimeoutExpired:
                self.children.stop(proc, timeout=5)
                raise RuntimeError("deno writer timed out") from None
            if proc.returncode != 0:
                raise RuntimeError(
                    f"deno writer failed ({proc.returncode}):\n"
                    f"{err.decode(errors='replace')[-3000:]}"
                )
            parts.append(json.loads([ln for ln in out.decode().splitlines() if ln.strip()][-1]))
        writes = sum(p["writes"] for p in parts)
        value_bytes = sum(p["value_bytes"] for p in parts)
        return {
            "writes": writes,
            "rate": writes / self.seconds,
            "value_bytes": value_bytes,
            "committed_bytes": value_bytes + writes * write_key_bytes(),
            "errors": sum(p["errors"] for p in parts),
            "error_samples": [s for p in parts for s in p["error_samples"]][:5],
            "late_ms": max(p["late_ms"] for p in parts),
            "behind_max_ms": max(p["behind_max_ms"] for p in parts),
            "records": [r for p in parts for r in (p.get("records") or [])],
        }


# -- big databases ------------------------------------------------------------------------


def big_value(i: int, size: int) -> bytes:
    """A JSON-like value of `size` bytes (same style as the Deno writer's)."""
    text = f'{{"id":{i},"token":"{hashlib.blake2b(str(i).encode(), digest_size=8).hexdigest()}",' \
           f'"amount":{(i * 7919) % 100000},"at":"2026-11-24T10:15:00.000Z"}}'  # fmt: skip
    words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
    j = i
    while len(text) < size:
        text += " " + words[j % len(words)]
        j = j * 1103515245 + 12345 & 0x7FFFFFFF
    return text[:size].encode()


def big_key(i: int) -> bytes:
    from denokv.keys import encode_key

    return encode_key(("k", i))


def build_big_db(path: Path, keys: int, value_size: int = 100, batch: int = 1000) -> float:
    """Write `keys` keys ["k", i] (i a bigint) straight through the engine; returns seconds."""
    from denokv.engine import Engine
    from denokv.operations import AtomicWrite, Mutation, MutationKind, ValueEncoding

    t0 = time.monotonic()
    eng = Engine(path, synchronous="off")
    try:
        for start in range(0, keys, batch):
            muts = tuple(
                Mutation(big_key(i), MutationKind.SET, big_value(i, value_size),
                         ValueEncoding.BYTES)
                for i in range(start, min(keys, start + batch))
            )  # fmt: skip
            eng.atomic_write_sync(AtomicWrite(mutations=muts))
    finally:
        eng.close()
    return time.monotonic() - t0


def kv_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        count: int = conn.execute("select count(*) from kv").fetchone()[0]
        return count
    finally:
        conn.close()


def kv_digest(db: Path) -> tuple[int, str]:
    """(key count, sha256 over every key and value in key order) of a Deno KV file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    h = hashlib.sha256()
    n = 0
    try:
        for k, v in conn.execute("select k, v from kv order by k"):
            h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v)
            n += 1
    finally:
        conn.close()
    return n, h.hexdigest()


# -- numbers -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


def pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0f} %"


def new_token() -> str:
    return secrets.token_urlsafe(18)


def background_cpu(seconds: float = 1.0) -> float:
    b0, t0 = machine_busy()
    time.sleep(seconds)
    b1, t1 = machine_busy()
    return 100 * (os.cpu_count() or 1) * (b1 - b0) / (t1 - t0) if t1 > t0 else math.nan


# -- log entries through a server ------------------------------------------------------------


async def load_log_entries(
    url: str, token: str, entries: int, per_write: int, keys: int, value_size: int,
    tasks: int = 8,
) -> dict[str, Any]:  # fmt: skip
    """`entries` redo entries as atomic writes of `per_write` sets, through the server.

    Half the sets of each write update distinct random old keys ["k", i < keys],
    the other half add new keys ["k", keys + j]. The Python client over KV Connect.
    """
    import asyncio
    import random

    import denokv

    writes = math.ceil(entries / per_write)
    rng = random.Random(7)
    new_key = keys
    plan = []
    for _ in range(writes):
        olds = rng.sample(range(keys), per_write - per_write // 2)
        news = list(range(new_key, new_key + per_write // 2))
        new_key += per_write // 2
        plan.append(olds + news)
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for p in plan:
        queue.put_nowait(p)
    async with denokv.open_kv(url, access_token=token) as kv:

        async def worker() -> None:
            while not queue.empty():
                op = kv.atomic()
                for i in queue.get_nowait():
                    op.set(("k", i), big_value(i + 17, value_size))
                if not (await op.commit()).ok:
                    raise RuntimeError("a loader write failed")

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        elapsed = time.monotonic() - t0
    return {"writes": writes, "entries": writes * per_write, "new_keys": new_key - keys,
            "seconds": elapsed}  # fmt: skip


class BenchRun:
    """Shared set-up and teardown of a benchmark run: SIGTERM handling, a work
    directory, one moto server, the child processes, and the JSON report.

        with BenchRun("backup", args) as run:
            run.report["x"] = part(run.children, run.work, run.token, run.moto, args)
    """

    def __init__(self, name: str, args: Any) -> None:
        self.args = args
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.background = background_cpu()
        self.token = new_token()
        self.work = Path(tempfile.mkdtemp(prefix=f"denokv-bench-{name}-"))
        self.children = Children()
        self.report: dict[str, Any] = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "background_cpu_pct": self.background,
        }
        self.moto = Moto(self.work)
        print(f"{name} bench: background CPU {self.background:.0f} %, work dir {self.work}",
              flush=True)  # fmt: skip

    @staticmethod
    def add_options(p: argparse.ArgumentParser) -> None:
        """The flags a run reads at its end: where to write the report, and --keep."""
        p.add_argument("--json-out", type=Path, help="also write every figure to this JSON file")
        p.add_argument("--keep", action="store_true", help="keep the temporary directory")

    def parts(self) -> tuple[Children, Path, str, Moto]:
        """What every benchmark part takes first: (children, work, token, moto)."""
        return self.children, self.work, self.token, self.moto

    def __enter__(self) -> BenchRun:
        self.moto.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.children.stop_all()
        self.moto.stop()
        if self.args.json_out:
            self.args.json_out.write_text(json.dumps(self.report, indent=2, default=str))
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
