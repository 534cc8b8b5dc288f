"""The demo summary's backtest line: the real-data figures when measured, else how to measure."""

from __future__ import annotations

import json
from pathlib import Path

from sf311.demo import backtest_line


def test_backtest_line_quotes_the_quality_figures(tmp_path: Path) -> None:
    path = tmp_path / "model_quality.json"
    figures = [
        {"name": "pooled_model_mae_log", "value": 1.1234},
        {"name": "pooled_model_r2_log", "value": 0.5},
        {"name": "pooled_coverage_distance_from_80", "value": 0.01},
        {"name": "fit_seconds", "value": 80.0},
    ]
    path.write_text(json.dumps({"when": "2026-12-02T20:00:00+00:00", "figures": figures}))
    line = backtest_line(path)
    assert line == (
        "backtest on the real sample (model_quality.json, 2026-12-02): "
        "pooled_model_mae_log 1.12, pooled_model_r2_log 0.5"
    )


def test_backtest_line_says_how_to_measure_when_absent_or_unreadable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    for path in (tmp_path / "absent.json", broken):
        assert backtest_line(path).endswith(
            "no backtest figures: run .venv/bin/python -m bench.model_quality"
        )
