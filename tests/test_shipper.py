"""The shipper in-process, where a crash can be placed exactly between upload and trim."""

from __future__ import annotations

from pathlib import Path

import pytest

from denokv.engine import Engine
from tests.support.dbfile import kv_rows
from tests.support.s3 import list_keys, s3_env
from tests.support.writes import put
from timemachine.restore import Point, restore
from timemachine.s3 import S3Options, S3Store
from timemachine.shipper import Shipper, ShipperOptions

pytestmark = pytest.mark.s3

PREFIX = "p/"


async def test_a_crash_between_upload_and_trim_loses_and_duplicates_nothing(
    tmp_path: Path, s3_bucket: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    endpoint, bucket = s3_bucket
    store = S3Store(S3Options(bucket, PREFIX, endpoint, "us-east-1", force_path_style=True))
    engine = Engine(tmp_path / "kv.sqlite", redo_log=True)
    try:
        first = Shipper(engine, store, PREFIX, ShipperOptions())
        await first.sync_once()  # the generation's snapshot
        for i in range(20):
            await engine.atomic_write(put(i))

        async def killed_before_trim(*args: object, **kwargs: object) -> None:
            raise RuntimeError("process killed before the trim")

        first._record = killed_before_trim  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await first.ship_pending()
        logs = [k for k in list_keys(endpoint, bucket, PREFIX) if "/logs/" in k]
        assert len(logs) == 1, "the segment was uploaded"
        with engine.reader() as conn:
            assert conn.execute("select count(*) from denokv_redo_log").fetchone()[0] == 20

        for i in range(20, 25):
            await engine.atomic_write(put(i))
        restarted = Shipper(engine, store, PREFIX, ShipperOptions())
        await restarted.sync_once()
        with engine.reader() as conn:
            assert conn.execute("select count(*) from denokv_redo_log").fetchone()[0] == 0
        assert restarted.stats.generation == first.stats.generation  # same generation resumed

        out = tmp_path / "restored.sqlite"
        result = await restore(store, PREFIX, Point(), out)
        assert kv_rows(out) == kv_rows(tmp_path / "kv.sqlite")
        assert result.keys == 25
        first.close()
        restarted.close()
    finally:
        engine.close()
        await store.close()
