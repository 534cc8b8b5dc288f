"""Structured log lines: JSON for collectors, logfmt for people, extra fields kept."""

from __future__ import annotations

import json
import logging

from sf311.logs import JsonFormatter, LogfmtFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("sf311.stream", logging.INFO, __file__, 1, "batch %d", (7,), None)
    record.__dict__.update(extra)
    return record


def test_json_line_carries_message_level_logger_and_extra_fields() -> None:
    line = json.loads(JsonFormatter().format(_record(rows_in=120, seconds=1.5)))
    assert line["msg"] == "batch 7" and line["level"] == "info"
    assert line["logger"] == "sf311.stream"
    assert line["rows_in"] == 120 and line["seconds"] == 1.5
    assert line["ts"].endswith("+00:00")


def test_logfmt_quotes_values_with_spaces() -> None:
    line = LogfmtFormatter().format(_record(where="bronze and silver", rows_in=3))
    assert 'msg="batch 7"' in line
    assert 'where="bronze and silver"' in line and " rows_in=3" in line
