"""Settings refuse what Spark would refuse later: a bad trigger stops `sf311` at start, exit 2."""

from __future__ import annotations

import pytest

from sf311.settings import SettingsError, is_available_now, load_settings

# Each one checked against Spark 4.2's Trigger.ProcessingTime (JVM) when the rule was written.
SPARK_TAKES = [
    "1 second", "30 seconds", "1 SECOND", "  5 seconds  ", "interval 10 seconds",
    "INTERVAL 3 MINUTES", "1 minute 30 seconds", "1 hours 2 minutes", "0 seconds",
    "1.5 seconds", "500 milliseconds", "5 microseconds", "1 day", "2 weeks", "+5 seconds",
]  # fmt: skip
SPARK_REFUSES = [
    "banana", "", "10", "1second", "10s", "1 sec", "1 min", "1 ms", "1.5 minutes",
    "-1 second", "1 month", "1 year", "interval", "once",
]  # fmt: skip


@pytest.mark.parametrize("variable", ["stream_trigger", "stream_lake_trigger"])
@pytest.mark.parametrize("trigger", SPARK_TAKES + ["availableNow", "available_now"])
def test_spark_processing_times_and_available_now_are_taken(variable: str, trigger: str):
    assert getattr(load_settings(**{variable: trigger}), variable) == trigger


@pytest.mark.parametrize("variable", ["stream_trigger", "stream_lake_trigger"])
@pytest.mark.parametrize("trigger", SPARK_REFUSES)
def test_other_triggers_are_refused_naming_the_variable(variable: str, trigger: str) -> None:
    with pytest.raises(SettingsError, match=f"SF311_{variable.upper()}: must be a processing"):
        load_settings(**{variable: trigger})


def test_available_now_is_recognised_in_any_spelling() -> None:
    assert all(map(is_available_now, ["availableNow", "available_now", "AVAILABLE NOW"]))
    assert not is_available_now("1 second")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SF311_STREAM_TRIGGER", "banana"),
        ("SF311_STREAM_LAKE_TRIGGER", "1 month"),
        ("SF311_CONNECT_TIMEOUT_SECONDS", "1"),
    ],
)
def test_a_bad_setting_ends_any_command_with_one_line(sf311, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    code, out, err = sf311("db", "migrate")
    assert (code, out) == (2, "")
    assert err.startswith(f"sf311 db migrate: bad setting: {variable}: ") and err.count("\n") == 1
