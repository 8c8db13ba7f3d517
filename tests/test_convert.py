"""The hand-written protobuf encoders give exactly the protobuf library's bytes."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from denokv import limits as L
from denokv import texts as T
from denokv.operations import ReadRange, WriteResult, WriteStatus
from denokv.proto import datapath_pb2 as pb
from denokv.server import convert
from denokv.server.errors import HttpError
from denokv.tables import LiveRow
from denokv.versionstamp import from_version

# Stored rows as a read returns them: (key, value, encoding, version, seq).
rows = st.tuples(
    st.binary(max_size=300),
    st.binary(max_size=300),
    st.sampled_from([1, 2, 3]),
    st.sampled_from([0, 1, 2**32, 2**63 - 1]),
    st.sampled_from([0, 1, 0xFFFF]),
)


def library_read_output(results: list[list[LiveRow]], strong: bool) -> bytes:
    out = pb.SnapshotReadOutput(read_is_strongly_consistent=strong, status=pb.SR_SUCCESS)
    for found in results:
        values = out.ranges.add().values
        for key, value, encoding, version, seq in found:
            stamp = from_version(version, seq)
            values.add(key=key, value=value, encoding=encoding, versionstamp=stamp)
    return out.SerializeToString()


@given(st.lists(st.lists(rows, max_size=4), max_size=4), st.booleans())
def test_read_output_is_byte_identical_to_the_library(
    results: list[list[LiveRow]], strong: bool
) -> None:
    assert convert.read_output(results, strong) == library_read_output(results, strong)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 16383, 16384, 65536])
def test_read_output_at_varint_boundaries(size: int) -> None:
    for row in (
        (b"k" * size, b"v", 1, 7, 0),
        (b"k", b"v" * size, 3, 2**40, 3),
        (b"k" * size, b"v" * size, 2, 1, 0xFFFF),
    ):
        assert convert.read_output([[row]]) == library_read_output([[row]], True)


@given(
    st.sampled_from(list(WriteStatus)),
    st.sampled_from([b"", bytes(10), b"\x01" * 10]),
    st.lists(st.integers(0, 2**32 - 1), max_size=5),
)
def test_write_output_is_byte_identical_to_the_library(
    status: WriteStatus, stamp: bytes, failed: list[int]
) -> None:
    result = WriteResult(status, stamp, tuple(failed))
    expected = pb.AtomicWriteOutput(
        status=cast(pb.AtomicWriteStatus, int(status)), versionstamp=stamp, failed_checks=failed
    ).SerializeToString()
    assert convert.write_output(result) == expected


def test_a_stored_value_of_unknown_encoding_is_refused() -> None:
    with pytest.raises(HttpError) as caught:
        convert.read_output([[(b"k", b"v", 7, 1, 0)]])
    assert (caught.value.status, caught.value.text) == (400, "The value encoding 7 is unknown.")


# -- snapshot_read requests -------------------------------------------------------

key_sizes = st.sampled_from([0, 1, 100, L.MAX_READ_KEY_SIZE, L.MAX_READ_KEY_SIZE + 1])
read_range_messages = st.builds(
    lambda start, end, limit, reverse: pb.ReadRange(
        start=b"s" * start, end=b"e" * end, limit=limit, reverse=reverse
    ),
    key_sizes,
    key_sizes,
    st.sampled_from([-5, 0, 1, 2, 99, 500, L.MAX_READ_ENTRIES, L.MAX_READ_ENTRIES + 1]),
    st.booleans(),
)


def expected_read(ranges: list[pb.ReadRange]) -> list[ReadRange] | str:
    """The ranges, or the text of the first limit broken, in upstream's order."""
    if len(ranges) > L.MAX_READ_RANGES:
        return T.TOO_MANY_RANGES
    for r in ranges:
        if r.limit < 1:
            return T.INVALID_LIMIT
        if max(len(r.start), len(r.end)) > L.MAX_READ_KEY_SIZE:
            return T.KEY_TOO_LARGE
    if sum(r.limit for r in ranges) > L.MAX_READ_ENTRIES:
        return T.TOO_MANY_ENTRIES
    return [ReadRange(r.start, r.end, r.limit, r.reverse) for r in ranges]


@given(st.lists(read_range_messages, max_size=L.MAX_READ_RANGES + 2))
def test_read_ranges_keep_every_field_and_refuse_in_upstreams_order(
    ranges: list[pb.ReadRange],
) -> None:
    msg = pb.SnapshotRead.FromString(pb.SnapshotRead(ranges=ranges).SerializeToString())
    want = expected_read(ranges)
    if isinstance(want, str):
        with pytest.raises(HttpError) as caught:
            convert.read_ranges(msg)
        assert (caught.value.status, caught.value.text) == (400, want)
    else:
        assert convert.read_ranges(msg) == want
