"""A bare KV Connect caller for protocol tests: raw protobuf over httpx (HTTP/1.1 or h2c)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from denokv.proto import datapath_pb2 as pb

NIL_ID = "00000000-0000-0000-0000-000000000000"


class RawKv:
    def __init__(self, url: str, token: str, http2: bool = False) -> None:
        self.url = url
        self.token = token
        # http1=False makes httpx speak h2c with prior knowledge, as Deno does.
        self.client = httpx.Client(http1=not http2, http2=http2, timeout=30)

    def headers(self, **overrides: str | None) -> dict[str, str]:
        h: dict[str, str | None] = {
            "authorization": f"Bearer {self.token}",
            "x-denokv-version": "3",
            "x-denokv-database-id": NIL_ID,
        }
        h.update({k.replace("_", "-"): v for k, v in overrides.items()})
        return {k: v for k, v in h.items() if v is not None}

    def post(self, path: str, body: bytes, **headers: str | None) -> httpx.Response:
        return self.client.post(self.url + path, content=body, headers=self.headers(**headers))

    def write(self, msg: pb.AtomicWrite) -> httpx.Response:
        return self.post("/v2/atomic_write", msg.SerializeToString())

    def write_ok(self, msg: pb.AtomicWrite) -> pb.AtomicWriteOutput:
        resp = self.write(msg)
        assert resp.status_code == 200, resp.text
        out = pb.AtomicWriteOutput.FromString(resp.content)
        return out

    def read(self, *ranges: pb.ReadRange) -> httpx.Response:
        return self.post("/v2/snapshot_read", pb.SnapshotRead(ranges=ranges).SerializeToString())

    def get(self, key: bytes) -> pb.KvEntry | None:
        resp = self.read(pb.ReadRange(start=key, end=key + b"\x00", limit=1))
        assert resp.status_code == 200, resp.text
        values = pb.SnapshotReadOutput.FromString(resp.content).ranges[0].values
        return values[0] if values else None

    def close(self) -> None:
        self.client.close()


def set_mutation(
    key: bytes, data: bytes, encoding: pb.ValueEncoding = pb.VE_BYTES, **kw: Any
) -> pb.Mutation:
    return pb.Mutation(
        key=key, value=pb.KvValue(data=data, encoding=encoding), mutation_type=pb.M_SET, **kw
    )


def u64(n: int) -> pb.KvValue:
    return pb.KvValue(data=n.to_bytes(8, "little"), encoding=pb.VE_LE64)


def file_state(db: Path) -> tuple[int, list[tuple[bytes, bytes, int, int]], int]:
    """(data version, every kv row, queue length) read straight from the SQLite file."""
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("select version from data_version where k = 0").fetchone()[0]
        rows = conn.execute("select k, v, v_encoding, version from kv order by k").fetchall()
        queued = conn.execute("select count(*) from queue").fetchone()[0]
        return version, rows, queued
    finally:
        conn.close()
