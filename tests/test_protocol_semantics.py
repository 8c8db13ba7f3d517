"""What a KV Connect client sees on success: reply fields, versionstamps, watch frames."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from denokv.proto import datapath_pb2 as pb
from denokv.versionstamp import version_of
from tests.support.kvconnect import RawKv, set_mutation
from tests.support.processes import ServerProcess


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("semantics") / "kv.sqlite").start()
    yield server
    server.stop()


@pytest.fixture
def kv(srv: ServerProcess) -> Iterator[RawKv]:
    client = RawKv(srv.url, srv.token, http2=True)
    yield client
    client.close()


def test_read_replies_set_consistency_and_status_explicitly(kv: RawKv) -> None:
    resp = kv.read(pb.ReadRange(start=b"", end=b"\xff", limit=1))
    assert resp.headers["content-type"] == "application/x-protobuf"
    out = pb.SnapshotReadOutput.FromString(resp.content)
    assert out.read_is_strongly_consistent is True
    assert out.status == pb.SR_SUCCESS
    assert out.read_disabled is False
    assert len(out.ranges) == 1


def test_every_range_gets_an_output_even_when_empty(kv: RawKv) -> None:
    kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02r1\x00", b"x")]))
    resp = kv.read(
        pb.ReadRange(start=b"\x02r0\x00", end=b"\x02r0\xff", limit=5),
        pb.ReadRange(start=b"\x02r1\x00", end=b"\x02r1\x01", limit=5),
        pb.ReadRange(start=b"\x02z", end=b"\x02a", limit=5),  # start > end: nothing
    )
    out = pb.SnapshotReadOutput.FromString(resp.content)
    assert [len(r.values) for r in out.ranges] == [0, 1, 0]


def test_reverse_reads_return_the_last_entries_first(kv: RawKv) -> None:
    keys = [b"\x02rev\x00\x15" + bytes([i]) for i in range(10)]
    kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(k, b"v") for k in keys]))
    resp = kv.read(pb.ReadRange(start=b"\x02rev\x00", end=b"\x02rev\xff", limit=3, reverse=True))
    got = [e.key for e in pb.SnapshotReadOutput.FromString(resp.content).ranges[0].values]
    assert got == keys[::-1][:3]


def test_write_output_and_versionstamps(kv: RawKv) -> None:
    first = kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02vs\x00", b"1")]))
    second = kv.write_ok(pb.AtomicWrite())  # an empty write still commits
    assert first.status == pb.AW_SUCCESS and len(first.versionstamp) == 10
    assert first.versionstamp.endswith(b"\x00\x00")
    delta = version_of(second.versionstamp) - version_of(first.versionstamp)
    assert 1 <= delta <= 9
    entry = kv.get(b"\x02vs\x00")
    assert entry is not None and entry.versionstamp == first.versionstamp


def test_check_failure_reports_failed_checks_and_no_versionstamp(kv: RawKv) -> None:
    kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02cf\x00", b"1")]))
    out = kv.write_ok(
        pb.AtomicWrite(
            checks=[pb.Check(key=b"\x02cf-absent\x00"), pb.Check(key=b"\x02cf\x00")],
            mutations=[set_mutation(b"\x02cf\x00", b"2")],
        )
    )
    assert out.status == pb.AW_CHECK_FAILURE
    assert list(out.failed_checks) == [1]
    assert out.versionstamp == b""
    entry = kv.get(b"\x02cf\x00")
    assert entry is not None and entry.value == b"1"


class WatchReader:
    """Reads length-prefixed watch frames from a streaming response in a thread."""

    def __init__(self, kv: RawKv, keys: list[bytes]) -> None:
        body = pb.Watch(keys=[pb.WatchKey(key=k) for k in keys]).SerializeToString()
        self.frames: list[tuple[float, pb.WatchOutput | None]] = []
        self._client = httpx.Client(http1=False, http2=True, timeout=30)
        self._request = self._client.build_request(
            "POST", kv.url + "/v2/watch", content=body, headers=kv.headers()
        )
        self.content_type = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        resp = self._client.send(self._request, stream=True)
        self.content_type = resp.headers.get("content-type", "")
        buf = b""
        try:
            for chunk in resp.iter_raw():
                buf += chunk
                while len(buf) >= 4:
                    (n,) = struct.unpack("<I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    payload, buf = buf[4 : 4 + n], buf[4 + n :]
                    msg = pb.WatchOutput.FromString(payload) if n else None
                    self.frames.append((time.monotonic(), msg))
        except httpx.HTTPError:
            pass

    def messages(self) -> list[pb.WatchOutput]:
        return [m for _, m in self.frames if m is not None]

    def wait_for(self, count: int, timeout: float = 10) -> list[pb.WatchOutput]:
        deadline = time.monotonic() + timeout
        while len(self.messages()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages()

    def close(self) -> None:
        self._client.close()


def values(msg: pb.WatchOutput) -> list[bytes | None]:
    return [k.entry_if_changed.value if k.HasField("entry_if_changed") else None for k in msg.keys]


def test_watch_stream_frames(kv: RawKv) -> None:
    a, b = b"\x02wa\x00", b"\x02wb\x00"
    kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(a, b"a0")]))
    watch = WatchReader(kv, [a, b])
    try:
        first = watch.wait_for(1)
        assert watch.frames[0][1] is None, "the stream starts with a keepalive"
        assert watch.content_type == "application/octet-stream"
        assert [k.changed for k in first[0].keys] == [True, True]
        assert values(first[0]) == [b"a0", None]
        assert first[0].status == pb.SR_SUCCESS

        # Touching a watched key without changing it (delete of a missing key)
        # and writing an unwatched key send nothing.
        kv.write_ok(pb.AtomicWrite(mutations=[pb.Mutation(key=b, mutation_type=pb.M_DELETE)]))
        kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b"\x02other\x00", b"x")]))
        time.sleep(0.5)
        assert len(watch.messages()) == 1

        kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(b, b"b1")]))
        assert values(watch.wait_for(2)[1]) == [b"a0", b"b1"]
        kv.write_ok(pb.AtomicWrite(mutations=[set_mutation(a, b"a0")]))  # same value, new stamp
        assert values(watch.wait_for(3)[2]) == [b"a0", b"b1"]
        kv.write_ok(pb.AtomicWrite(mutations=[pb.Mutation(key=a, mutation_type=pb.M_DELETE)]))
        assert values(watch.wait_for(4)[3]) == [None, b"b1"]
    finally:
        watch.close()


@pytest.mark.slow
def test_watch_sends_keepalives_about_every_five_seconds(kv: RawKv) -> None:
    watch = WatchReader(kv, [b"\x02quiet\x00"])
    try:
        watch.wait_for(1)
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            keepalives = [t for t, m in watch.frames if m is None]
            if len(keepalives) >= 2:
                break
            time.sleep(0.1)
        keepalives = [t for t, m in watch.frames if m is None]
        assert len(keepalives) >= 2
        assert 4.0 <= keepalives[1] - keepalives[0] <= 6.5
    finally:
        watch.close()


def test_versionstamped_set_stores_the_suffixed_key_and_no_fake_update(kv: RawKv) -> None:
    prefix = b"\x02vsw\x00"
    watch = WatchReader(kv, [prefix])
    try:
        watch.wait_for(1)
        out = kv.write_ok(
            pb.AtomicWrite(
                mutations=[
                    pb.Mutation(
                        key=prefix,
                        value=pb.KvValue(data=b"x", encoding=pb.VE_BYTES),
                        mutation_type=pb.M_SET_SUFFIX_VERSIONSTAMPED_KEY,
                    )
                ]
            )
        )
        stored = prefix + b"\x02" + out.versionstamp.hex().encode() + b"\x00"
        assert kv.get(stored) is not None
        # The prefix key itself still does not exist, so the re-read finds no
        # change and nothing is sent: the watcher was woken, not misled.
        time.sleep(0.5)
        assert len(watch.messages()) == 1
    finally:
        watch.close()
