"""The frames between the main server process and its workers (`denokv.server.ipc`)."""

from __future__ import annotations

import asyncio

import pytest

from denokv.server import ipc


def _read(data: bytes) -> tuple[ipc.Kind, int, bytes] | None:
    async def go() -> tuple[ipc.Kind, int, bytes] | None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await ipc.read_frame(reader)

    return asyncio.run(go())


def test_a_frame_reads_back_as_written() -> None:
    payload = ipc.encode_health(["backup is more than 5 s behind"], None)
    assert _read(ipc.frame(ipc.Kind.HEALTH, 7, payload)) == (ipc.Kind.HEALTH, 7, payload)


def test_a_cut_frame_reads_as_the_other_side_closing() -> None:
    whole = ipc.frame(ipc.Kind.REPLY, 1, ipc.encode_reply(200, "text/plain", b"ok"))
    assert _read(whole[:-1]) is None
    assert _read(b"") is None


def test_an_unknown_kind_or_a_huge_length_is_refused() -> None:
    with pytest.raises(ipc.FrameError, match="unknown frame kind 99"):
        _read(ipc.HEADER.pack(0, 99, 0))
    with pytest.raises(ipc.FrameError, match="a frame of"):
        _read(ipc.HEADER.pack(ipc.MAX_FRAME + 1, ipc.Kind.CALL, 0))


def test_health_reports_round_trip() -> None:
    for problems, fatal in [([], None), (["a", "b"], None), ([], "the writer stopped (x)")]:
        assert ipc.decode_health(ipc.encode_health(problems, fatal)) == (problems, fatal)


@pytest.mark.parametrize(
    "payload", [b"", b"not json", b"[]", b'{"problems": "x", "fatal": null}', b'{"problems": []}']
)
def test_an_unreadable_health_report_reads_as_not_ready(payload: bytes) -> None:
    problems, fatal = ipc.decode_health(payload)
    assert problems and "unreadable health report" in problems[0]
    assert fatal is None


def test_replies_and_key_lists_round_trip() -> None:
    assert ipc.decode_reply(ipc.encode_reply(503, "text/plain", b"later")) == (
        503,
        "text/plain",
        b"later",
    )
    keys = [b"", b"\x02a\x00", b"\xff" * 300]
    assert ipc.decode_keys(ipc.encode_keys(keys)) == keys
