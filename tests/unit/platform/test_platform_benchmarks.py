"""Benchmark results files and the summary table `make bench` writes from them."""

from __future__ import annotations

import json
from pathlib import Path

from sf311.benchmarks import Figure, summary_markdown, write_results


def test_met_follows_the_direction_of_the_target() -> None:
    assert Figure("rate", 16_000, "rec/s", target=80_000).met() is False
    assert Figure("rate", 90_000, "rec/s", target=80_000).met() is True
    assert Figure("p99", 2.4, "ms", target=10, better="lower").met() is True
    assert Figure("p99", 12, "ms", target=10, better="lower").met() is False
    assert Figure("rows", 5, "rows").met() is None


def test_results_round_trip_into_the_summary(tmp_path: Path) -> None:
    figures = [
        Figure("end to end", 941, "rows/s", rows=100_000, target=15_000),
        Figure("freshness p95", 4.2, "s", rows=30_000, target=5, better="lower"),
    ]
    scale = [{"rows": 1_000_000, "seconds": 400.0}, {"rows": 100_000, "seconds": 50.0}]
    path = write_results("stream", figures, {"batches": 3}, scale=scale, results_dir=tmp_path)
    doc = json.loads(path.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["details"] == {"batches": 3}
    text = summary_markdown([doc])
    rows = [line for line in text.splitlines() if line.startswith("| stream |")]
    assert rows[0].startswith("| stream | end to end | 941 rows/s | ≥ 15,000 rows/s | **no** |")
    assert "| 100,000 |" in rows[0]
    assert rows[1].startswith("| stream | freshness p95 | 4.2 s | ≤ 5 s | yes |")
    curve = text.split("## Scale curve: stream")[1].splitlines()
    # Sorted by size, with the cost per 100k rows that shows how cost grows.
    assert curve[4] == "| 100,000 | 50.0 | 2,000 | 50.0 |"
    assert curve[5] == "| 1,000,000 | 400.0 | 2,500 | 40.0 |"
