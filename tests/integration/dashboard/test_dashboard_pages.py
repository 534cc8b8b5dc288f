"""Each dashboard page run by Streamlit's AppTest against the test warehouse of known cases.

Expected figures are computed here, in plain Python, from the same known rows (the pages read
gold tables and case predictions that the fixture filled from those rows by SQL).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from sf311.dashboard import ui
from tests.support import scratch
from tests.support.dashboard_server import FIXTURE_STATUS

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


def month_of(instant: datetime) -> tuple[int, int]:
    local = instant.astimezone(LA)
    return local.year, local.month


def merged_percentiles(cases: list[dict], months: set[tuple[int, int]]) -> tuple[float, float]:
    """Percentiles of resolved cases closed in `months`, merged over month x category x
    neighborhood as the dashboard documents: the mean of each group's percentile weighted by
    its size."""
    groups: dict[tuple, list[float]] = {}
    for c in cases:
        if c["closed_date"] and resolved(c) and month_of(c["closed_date"]) in months:
            key = (month_of(c["closed_date"]), c["service_name"], c["neighborhood"])
            groups.setdefault(key, []).append(c["resolution_hours"])
    total = sum(len(h) for h in groups.values())
    p50 = sum(percentile_cont(h, 0.5) * len(h) for h in groups.values()) / total
    p90 = sum(percentile_cont(h, 0.9) * len(h) for h in groups.values()) / total
    return p50, p90


def open_at(cases: list[dict], cut: datetime) -> int:
    """Cases opened before `cut` and not closed by then."""
    return sum(
        c["requested_datetime"] < cut and (c["closed_date"] is None or c["closed_date"] > cut)
        for c in cases
    )


def figures(cases: list[dict], lo: datetime, hi: datetime, months: set) -> dict:
    opened = [c for c in cases if lo <= c["requested_datetime"] < hi]
    closed = [c for c in cases if c["closed_date"] and lo <= c["closed_date"] < hi]
    p50, p90 = merged_percentiles(cases, months)
    return {"cases": len(opened), "closed": len(closed), "p50": p50, "p90": p90}


# Months the default range (2024-03-01..30) and the period before it (01-31..02-29) touch.
MONTHS, PREV_MONTHS = {(2024, 3)}, {(2024, 1), (2024, 2)}


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
    cur = figures(cases, START, END, MONTHS)
    prev = figures(cases, PREV_START, START, PREV_MONTHS)
    assert cur["cases"] > 40 and cur["closed"] > 30  # the fixture spreads cases over the range
    shown = metric_map(at)
    assert shown["Cases in range"] == (f"{cur['cases']:,}", change(cur["cases"], prev["cases"]))
    assert shown["Open at end of range"][0] == f"{open_at(cases, END):,}"
    # The backlog by age (the dashboard's one chart of it) ends on the same count.
    (backlog,) = _charts(at)["Backlog: open cases at the end of each day, by age"]
    assert backlog.loc[backlog["day"] == backlog["day"].max(), "open_cases"].sum() == open_at(
        cases, END
    )
    assert backlog["day"].max().date() == (END - timedelta(days=1)).date()
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
    cur = figures(picked, START, END, MONTHS)
    shown = metric_map(at)
    assert shown["Cases in range"][0] == f"{cur['cases']:,}"
    assert shown["Closed in range"][0] == f"{cur['closed']:,}"
    # The backlog and the resolution percentiles have no source: category only, and it says so.
    graffiti = [c for c in cases if c["service_name"] == "Graffiti"]
    assert shown["Open at end of range"][0] == f"{open_at(graffiti, END):,}"
    p50, _ = merged_percentiles(graffiti, MONTHS)
    assert shown["Median resolution"][0] == f"{p50:,.1f} h"
    assert "ignore the source filter" in at.info[0].value
    # Subtypes offered follow the chosen category.
    assert set(at.sidebar.multiselect(key="_subtypes").options) == {
        "Graffiti on Building",
        "Graffiti on Pole",
    }
    at.sidebar.date_input[0].set_value((datetime(2024, 2, 1).date(), datetime(2024, 2, 29).date()))
    at.run()
    lo = datetime(2024, 2, 1, tzinfo=LA).astimezone(UTC)
    hi = datetime(2024, 3, 1, tzinfo=LA).astimezone(UTC)
    assert metric_map(at)["Cases in range"][0] == f"{figures(picked, lo, hi, MONTHS)['cases']:,}"


def test_a_link_names_the_date_range_and_a_bad_one_is_said(app_env, cases):
    at = AppTest.from_file(str(APP / "app.py"), default_timeout=60)
    at.query_params.update({"from": "2024-02-01", "to": "2024-02-29"})
    at.run()
    assert not at.exception and not at.warning
    assert at.sidebar.date_input[0].value == (date(2024, 2, 1), date(2024, 2, 29))
    lo = datetime(2024, 2, 1, tzinfo=LA).astimezone(UTC)
    hi = datetime(2024, 3, 1, tzinfo=LA).astimezone(UTC)
    assert metric_map(at)["Cases in range"][0] == f"{figures(cases, lo, hi, MONTHS)['cases']:,}"
    # The address follows the range picked in the sidebar, so a copied link shares it.
    at.sidebar.date_input[0].set_value((date(2024, 3, 2), date(2024, 3, 9))).run()
    assert (at.query_params["from"], at.query_params["to"]) == ("2024-03-02", "2024-03-09")

    bad = AppTest.from_file(str(APP / "app.py"), default_timeout=60)
    bad.query_params.update({"from": "2024-02-30", "to": "2024-03-01"})
    bad.run()
    assert not bad.exception
    assert "from='2024-02-30'" in bad.warning[0].value
    assert bad.sidebar.date_input[0].value == (date(2024, 3, 1), date(2024, 3, 30))


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


def _charts(at: AppTest) -> dict[str, list[pd.DataFrame]]:
    """Return each Vega-Lite chart's data by title: one frame per layer, as the browser gets it."""
    charts = {}
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        data = {
            d.name: pa.ipc.open_stream(d.data.data).read_pandas() for d in element.proto.datasets
        }
        charts[spec["title"]] = [data[layer["data"]["name"]] for layer in spec.get("layer", [spec])]
    return charts


def _counts(frame: pd.DataFrame, key: str | list[str], value: str = "cases") -> dict:
    """Return {key: value} of a chart's rows whose value is not 0."""
    kept = frame[frame[value] != 0]
    keys = kept[key].itertuples(index=False, name=None) if isinstance(key, list) else kept[key]
    return dict(zip(keys, kept[value].tolist(), strict=True))


def test_charts_page_counts_match_known_cases(app_env, cases):
    at = run("views/charts.py")
    charts = _charts(at)
    in_range = [c for c in cases if START <= c["requested_datetime"] < END]
    expected = {}
    for c in in_range:
        expected[c["service_name"]] = expected.get(c["service_name"], 0) + 1
    assert _counts(charts["Cases by category"][0], "label") == expected
    by_source = {}
    for c in in_range:
        by_source[c["source"]] = by_source.get(c["source"], 0) + 1
    assert _counts(charts["Cases by source"][0], "label") == by_source
    stacked = charts["Cases by police district and category"][0]
    assert _counts(stacked, ["district", "category"]) == {
        (d, k): sum(c["police_district"] == d and c["service_name"] == k for c in in_range)
        for d, k in {(c["police_district"], c["service_name"]) for c in in_range}
    }
    (lines,) = charts["Daily volume, top 5 categories"]
    assert set(lines["category"]) == set(expected)  # 4 categories, all in the top 5
    assert lines["cases"].sum() == len(in_range)
    (resolution,) = charts["Time to close by month closed, resolved cases"]
    p50, p90 = merged_percentiles(cases, MONTHS)
    assert len(resolution) == 2  # one month closed in range: its median and p90
    assert _counts(resolution, "stat", "hours") == pytest.approx({"median": p50, "p90": p90})
    outcomes, _share = charts["SLA: cases closed within target, by day opened"]
    by_outcome = outcomes.groupby("outcome")["cases"].sum()
    assert by_outcome.sum() == len(in_range)  # every case opened in range has exactly one outcome
    assert by_outcome["met"] == sum(
        c["closed_date"] is not None
        and (c["closed_date"] - c["requested_datetime"]).total_seconds() <= 72 * 3600
        for c in in_range
    )

    at.radio(key="pie_by").set_value("police district").run()
    assert _counts(_charts(at)["Cases by police district"][0], "label") == {
        d: sum(c["police_district"] == d for c in in_range)
        for d in {c["police_district"] for c in in_range}
    }


def test_backlog_page_counts_open_cases_by_status(app_env, cases):
    at = run("views/backlog.py")
    # The fixture scores open case i as overdue, at risk or on time by i mod 3.
    open_ids = [c["service_request_id"] for c in cases if c["closed_date"] is None]
    expected = {s: sum(i % 3 == k for i in open_ids) for k, s in enumerate(FIXTURE_STATUS)}
    shown = metric_map(at)
    assert {s: shown[s.replace("_", " ").capitalize()][0] for s in expected} == {
        s: f"{n:,}" for s, n in expected.items()
    }
    table = at.dataframe[0].value
    assert len(table) == len(open_ids)
    assert list(table["hours_late"]) == sorted(table["hours_late"], reverse=True)
    assert set(table["status"]) == set(FIXTURE_STATUS)
    assert f"The {len(open_ids):,} latest by hours late" in at.caption[1].value
    at.sidebar.multiselect(key="_categories").select("Graffiti").run()
    graffiti = [
        c["service_request_id"]
        for c in cases
        if c["closed_date"] is None and c["service_name"] == "Graffiti"
    ]
    overdue = metric_map(at)["Overdue"][0]
    assert overdue == f"{sum(i % 3 == 0 for i in graffiti):,}"
    charts = _charts(at)
    # The backlog by age is the Overview's chart; this page draws only its own history.
    assert list(charts) == ["Overdue and at risk, as recorded each day"] and not at.exception
    # The fixture records today's statuses today and on every day holding a case (tests.support).
    (history,) = charts["Overdue and at risk, as recorded each day"]
    days = {c["requested_datetime"].astimezone(LA).date() for c in cases}
    days.add(datetime.now(LA).date())
    shown = {
        (d.date(), s): n for d, s, n in history[["day", "status", "cases"]].itertuples(index=False)
    }
    assert shown and {d for d, _ in shown} <= days
    want = {
        "overdue": sum(i % 3 == 0 for i in graffiti),
        "at risk": sum(i % 3 == 1 for i in graffiti),
    }
    assert {s for _, s in shown} == set(want)
    assert all(n == want[s] for (_, s), n in shown.items())


def test_cases_page_lists_the_newest_and_caps_the_download(app_env, cases, monkeypatch):
    at = run("views/cases.py")
    in_range = sorted(
        (c for c in cases if START <= c["requested_datetime"] < END),
        key=lambda c: (c["requested_datetime"], c["service_request_id"]),
        reverse=True,
    )
    table = at.dataframe[0].value
    assert list(table["service_request_id"]) == [c["service_request_id"] for c in in_range[:50]]
    assert f"of {len(in_range):,} cases matching" in at.caption[0].value
    assert not at.warning
    monkeypatch.setattr(ui, "CSV_MAX_ROWS", 10)
    st.cache_data.clear()
    at = run("views/cases.py")
    assert "of more than 10 cases matching" in at.caption[0].value
    assert "capped at 10 rows" in at.warning[0].value
    assert at.get("download_button")[0].proto.label == "Download 10 cases as CSV (times in UTC)"


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


@pytest.mark.parametrize(
    "page",
    [
        "app.py",
        "views/map.py",
        "views/charts.py",
        "views/predict.py",
        "views/backlog.py",
        "views/cases.py",
    ],
)
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
