"""Stream lag from a Spark checkpoint folder, as `sf311 status` and the demo read it."""

from __future__ import annotations

import json
from pathlib import Path

from sf311.platform.pipeline import Lag, checkpoint_offsets


def _batch(root: Path, n: int, offsets: dict[str, int], committed: bool) -> None:
    (root / "offsets").mkdir(parents=True, exist_ok=True)
    (root / "commits").mkdir(parents=True, exist_ok=True)
    meta = {"batchWatermarkMs": 0, "batchTimestampMs": 0, "conf": {}}
    body = ["v1", json.dumps(meta), json.dumps({"sf311.cases": offsets})]
    (root / "offsets" / str(n)).write_text("\n".join(body))
    if committed:
        (root / "commits" / str(n)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def test_offsets_of_the_last_committed_batch_not_of_the_planned_one(tmp_path: Path) -> None:
    _batch(tmp_path, 0, {"0": 10, "1": 7}, committed=True)
    _batch(tmp_path, 1, {"0": 25, "1": 9}, committed=True)
    _batch(tmp_path, 2, {"0": 40, "1": 30}, committed=False)
    assert checkpoint_offsets(str(tmp_path), "sf311.cases") == {0: 25, 1: 9}
    assert checkpoint_offsets(f"file://{tmp_path}", "sf311.cases") == {0: 25, 1: 9}


def test_no_checkpoint_yet_and_an_object_store_checkpoint(tmp_path: Path) -> None:
    assert checkpoint_offsets(str(tmp_path / "absent"), "sf311.cases") is None
    (tmp_path / "commits").mkdir()
    assert checkpoint_offsets(str(tmp_path), "sf311.cases") == {}
    assert checkpoint_offsets("s3a://bucket/checkpoints/q", "sf311.cases") is None


def test_lag_counts_what_is_left_per_partition() -> None:
    lag = Lag(end={0: 100, 1: 50}, committed={0: 60})
    assert lag.messages == 150
    assert lag.behind == 40 + 50
    assert Lag(end={0: 5}, committed=None).behind is None
