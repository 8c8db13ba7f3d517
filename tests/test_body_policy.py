"""How much of a request body the server takes (`denokv.server.pipeline.BodyPolicy`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from denokv import texts as T
from denokv.server.errors import HttpError
from denokv.server.pipeline import BodyPolicy

LIMIT = 1000


class Upload:
    """A body arriving in chunks, counting what was taken from it."""

    def __init__(self, size: int, chunk: int = 100) -> None:
        self.size = size
        self.chunk = chunk
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.taken < self.size:
            n = min(self.chunk, self.size - self.taken)
            self.taken += n
            yield b"x" * n


def read(policy: BodyPolicy, upload: Upload) -> bytes:
    async def go() -> bytes:
        return await policy.read(upload.__aiter__(), None)

    return asyncio.run(go())


def test_a_body_within_the_limit_is_read_whole() -> None:
    upload = Upload(LIMIT)
    assert read(BodyPolicy(max_size=LIMIT), upload) == b"x" * LIMIT


def test_a_refused_body_is_read_to_its_end_before_the_413() -> None:
    upload = Upload(3 * LIMIT)
    with pytest.raises(HttpError) as refused:
        read(BodyPolicy(max_size=LIMIT), upload)
    assert (refused.value.status, refused.value.text) == (413, T.BODY_TOO_LARGE)
    assert upload.taken == 3 * LIMIT


def test_a_far_larger_body_is_read_only_up_to_the_drain_limit() -> None:
    policy = BodyPolicy(max_size=LIMIT)
    upload = Upload(100 * LIMIT)
    with pytest.raises(HttpError):
        read(policy, upload)
    assert policy.drain_limit < upload.taken <= policy.drain_limit + upload.chunk


@pytest.mark.parametrize(
    ("declared", "result"),
    [(None, None), ("abc", None), ("10", 10), (str(LIMIT), LIMIT), (str(LIMIT + 1), None)],
)
def test_a_declared_length_says_how_to_read(declared: str | None, result: int | None) -> None:
    # None: read in chunks (no usable length, or too long: read, drop, then 413).
    assert BodyPolicy(max_size=LIMIT).check_declared(declared) == result


def test_a_declared_length_past_the_drain_limit_is_refused_unread() -> None:
    policy = BodyPolicy(max_size=LIMIT)
    with pytest.raises(HttpError) as refused:
        policy.check_declared(str(policy.drain_limit + 1))
    assert refused.value.status == 413


def test_discard_drops_an_unneeded_body_within_its_bounds() -> None:
    policy = BodyPolicy(max_size=LIMIT)
    small, huge = Upload(2 * LIMIT), Upload(100 * LIMIT)

    async def go() -> None:
        await policy.discard(small.__aiter__())
        await policy.discard(huge.__aiter__())

    asyncio.run(go())
    assert small.taken == 2 * LIMIT
    assert huge.taken <= policy.drain_limit + huge.chunk
