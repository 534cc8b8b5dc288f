"""The rolling-origin backtest's figures (bench/model_quality.py) as the API reports them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUMMARY_KEYS = ("design", "label_rule", "interval_method", "spent_fold", "pooled")


def backtest_summary(path: Path) -> dict[str, Any] | None:
    """Return the pooled and per-fold figures of a backtest results file, None if absent."""
    if not path.is_file():
        return None
    details = json.loads(path.read_text()).get("details", {})
    if "folds" not in details:
        return None
    summary = {k: details[k] for k in SUMMARY_KEYS if k in details}
    summary["model_minus_hgb_mae_log"] = details.get("model_minus_hgb_mae_log_bootstrap")
    summary["folds"] = [
        {k: f[k] for k in ("test_start", "test_end", "spent", "model", "median", "hgb")}
        for f in details["folds"]
    ]
    return summary
