"""Each dashboard page run by Streamlit's AppTest against the test warehouse of known cases.

Expected figures are computed here, in plain Python, from the same known rows.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.support import scratch

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[3] / "dashboard"
LA = ZoneInfo("America/Los_Angeles")
# The default range: the 30 SF days ending on the last day with cases, and the 30 before.
START = datetime(2024, 3, 1, tzinfo=LA).astimezone(UTC)
END = datetime(2024, 3, 31, tzinfo=LA).astimezone(UTC)
PREV_START = datetime(2024, 1, 31, tzinfo=LA).astimezone(UTC)


def percentile_cont(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, as Postgres percentile_cont does."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def resolved(case: dict) -> bool:
    """A case the resolution figures count: a resolved closure with a resolution time."""
    return case["closure_kind"] == "resolved" and case["resolution_hours"] is not None


def figures(cases: list[dict], lo: datetime, hi: datetime) -> dict:
    opened = [c for c in cases if lo <= c["requested_datetime"] < hi]
    closed = [c for c in cases if c["closed_date"] and lo <= c["closed_date"] < hi]
    hours = [c["resolution_hours"] for c in closed if resolved(c)]
    return {
        "cases": len(opened),
        "open": sum(c["closed_date"] is None for c in opened),
        "closed": len(closed),
        "p50": percentile_cont(hours, 0.5),
        "p90": percentile_cont(hours, 0.9),
    }


def change(now: float, before: float) -> str:
    return f"{(now - before) / before:+.1%}"


def run(page: str) -> AppTest:
    at = AppTest.from_file(str(APP / page), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric_map(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def test_overview_metrics_match_known_cases(app_env, cases):
    at = run("app.py")
    cur, prev = figures(cases, START, END), figures(cases, PREV_START, START)
    assert cur["cases"] > 40 and cur["closed"] > 30  # the fixture spreads cases over the range
    shown = metric_map(at)
    assert shown["Cases in range"] == (f"{cur['cases']:,}", change(cur["cases"], prev["cases"]))
    assert shown["Open now"][0] == f"{cur['open']:,}"
    assert shown["Closed in range"] == (
        f"{cur['closed']:,}",
        change(cur["closed"], prev["closed"]),
    )
    assert shown["Median resolution"] == (f"{cur['p50']:,.1f} h", change(cur["p50"], prev["p50"]))
    assert shown["P90 resolution"] == (f"{cur['p90']:,.1f} h", change(cur["p90"], prev["p90"]))
    assert shown["Batches in the last hour"][0] == "1"
    assert shown["Rows in the last hour"][0] == "500"
    # Committed 90 s before the session's fixture ran: seconds or minutes ago, never "never".
    assert re.fullmatch(r"\d+ (s|min) ago", shown["Last batch committed"][0])
    assert shown["Kafka to warehouse lag p50 / p95"][0] == "1.5 s / 4.0 s"
    assert at.sidebar.date_input[0].value == (
        datetime(2024, 3, 1).date(),
        datetime(2024, 3, 30).date(),
    )


def test_sidebar_filters_drive_the_metrics(app_env, cases):
    at = run("app.py")
    at.sidebar.multiselect(key="_categories").select("Graffiti").run()
    at.sidebar.multiselect(key="_sources").select("Phone").select("Web").run()
    assert not at.exception
    picked = [
        c for c in cases if c["service_name"] == "Graffiti" and c["source"] in ("Phone", "Web")
    ]
    cur = figures(picked, START, END)
    shown = metric_map(at)
    assert shown["Cases in range"][0] == f"{cur['cases']:,}"
    assert shown["Closed in range"][0] == f"{cur['closed']:,}"
    assert shown["Open now"][0] == f"{cur['open']:,}"
    # Subtypes offered follow the chosen category.
    assert set(at.sidebar.multiselect(key="_subtypes").options) == {
        "Graffiti on Building",
        "Graffiti on Pole",
    }
    at.sidebar.date_input[0].set_value((datetime(2024, 2, 1).date(), datetime(2024, 2, 29).date()))
    at.run()
    lo = datetime(2024, 2, 1, tzinfo=LA).astimezone(UTC)
    hi = datetime(2024, 3, 1, tzinfo=LA).astimezone(UTC)
    assert metric_map(at)["Cases in range"][0] == f"{figures(picked, lo, hi)['cases']:,}"


def test_map_page_layers_hold_the_filtered_cases(app_env, cases):
    at = run("views/map.py")
    in_range = [c for c in cases if START <= c["requested_datetime"] < END]
    located = [c for c in in_range if c["lat"] is not None]
    caption = at.caption[0].value
    assert f"Heatmap of {len(located):,} located cases" in caption
    assert f"the {len(located):,} newest as markers" in caption
    assert f"{len({c['neighborhood'] for c in located})} neighborhoods" in caption
    # Open cases are among the markers and the API is down: the page says so and still draws.
    assert any(c["closed_date"] is None for c in located)
    assert "not shown in the popups" in at.info[0].value


def values(data: list | dict) -> list:
    """Plotly 6 sends numeric arrays as {"dtype", "bdata": base64}; return a plain list."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def _plotly(at: AppTest) -> dict[str, dict]:
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return {s["layout"]["title"]["text"]: s for s in specs}


def test_charts_page_counts_match_known_cases(app_env, cases):
    at = run("views/charts.py")
    charts = _plotly(at)
    in_range = [c for c in cases if START <= c["requested_datetime"] < END]
    bars = charts["Cases by category"]["data"][0]
    shown = dict(zip(values(bars["y"]), values(bars["x"]), strict=True))
    expected = {}
    for c in in_range:
        expected[c["service_name"]] = expected.get(c["service_name"], 0) + 1
    assert shown == expected
    pie = charts["Cases by source"]["data"][0]
    by_source = {s: sum(c["source"] == s for c in in_range) for s in values(pie["labels"])}
    assert dict(zip(values(pie["labels"]), values(pie["values"]), strict=True)) == by_source
    hist = charts["Time to close, resolved cases closed in range"]["data"][0]
    closed = [c for c in cases if c["closed_date"] and START <= c["closed_date"] < END]
    hours = [c["resolution_hours"] for c in closed if resolved(c)]
    assert sum(values(hist["y"])) == len(hours) < len(closed)
    assert values(hist["y"])[0] == sum(h < 1 for h in hours)
    lines = charts["Daily volume, top 5 categories"]["data"]
    assert {t["name"] for t in lines} == set(expected)  # 4 categories, all in the top 5
    assert sum(sum(values(t["y"])) for t in lines) == len(in_range)

    at.radio(key="pie_by").set_value("status").run()
    pie = _plotly(at)["Cases by status"]["data"][0]
    assert dict(zip(values(pie["labels"]), values(pie["values"]), strict=True)) == {
        "Open": sum(c["closed_date"] is None for c in in_range),
        "Closed": sum(c["closed_date"] is not None for c in in_range),
    }


def test_predict_page_says_when_the_api_is_down(app_env):
    at = run("views/predict.py")
    assert at.selectbox(key="p_category").value == "Graffiti"  # first in sorted order
    at.selectbox(key="p_category").set_value("Tree Maintenance").run()
    assert set(at.selectbox(key="p_subtype").options) == {"Fallen Tree", "Trim Request"}
    at.button(key="p_go").click().run()
    assert not at.exception
    assert "prediction API is down" in at.error[0].value
    assert not at.metric


@pytest.fixture
def empty_env(settings, monkeypatch) -> Iterator[None]:
    """The app pointed at a warehouse with the schema but no case at all."""
    db = scratch.create(settings, "dashboard_test_empty")
    monkeypatch.setenv("SF311_ANALYST_DSN", db.analyst_dsn)
    monkeypatch.setenv("SF311_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SF311_DASHBOARD_TILES", "none")
    st.cache_data.clear()
    yield
    scratch.drop(settings, db.name)


@pytest.mark.parametrize("page", ["app.py", "views/map.py", "views/charts.py", "views/predict.py"])
def test_pages_explain_an_empty_warehouse(empty_env, page):
    at = run(page)
    assert "no cases yet" in at.info[0].value


@pytest.mark.parametrize("page", ["app.py", "views/predict.py"])
def test_pages_say_when_the_warehouse_is_unreachable(app_env, monkeypatch, page):
    monkeypatch.setenv(
        "SF311_ANALYST_DSN", "postgresql://analyst:analyst@127.0.0.1:5432/no_such_database"
    )
    at = run(page)
    assert "cannot be read as the analyst role" in at.error[0].value
    assert not at.metric
