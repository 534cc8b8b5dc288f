"""Map and chart builders: offline assets, popups, neighborhood circles, chart shapes."""

from __future__ import annotations

import re
from datetime import date

import pandas as pd
import streamlit_folium

from sf311.dashboard import charts, maps, ui


def _markers() -> pd.DataFrame:
    opened = pd.Timestamp("2024-03-10 20:00", tz="UTC")
    return pd.DataFrame(
        {
            "service_request_id": [1, 2],
            "service_name": ["Graffiti", "Tree <Maintenance>"],
            "service_subtype": ["Pole", None],
            "requested_datetime": [opened, opened],
            "closed_date": [None, opened + pd.Timedelta(hours=3)],
            "status_description": ["Open", "Closed"],
            "lat": [37.76, 37.78],
            "long": [-122.41, -122.42],
        }
    )


def _render(fmap) -> str:
    return fmap.get_root().render()


def _cases_map():
    """Return the Map page's map over _markers(), one heat cell and one neighborhood."""
    heat = pd.DataFrame({"lat": [37.76], "long": [-122.41], "cases": [3]})
    neighborhoods = pd.DataFrame(
        {
            "neighborhood": ["Mission"],
            "cases": [3],
            "p50_hours": [4.0],
            "lat": [37.76],
            "long": [-122.41],
        }
    )
    return maps.cases_map(heat, _markers(), neighborhoods, tiles=None)


def test_map_uses_only_vendored_assets():
    html = _render(_cases_map())
    assert "/app/static/vendor/leaflet.js" in html
    assert "/app/static/vendor/leaflet.markercluster.js" in html
    assert "/app/static/vendor/leaflet_heat.min.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assert '"maxZoom": 19' in html  # MarkerCluster needs it when no tile layer sets one


def test_maps_load_no_jquery_and_call_none():
    # Only folium's Popup elements and objects kept in front need jQuery; the maps use neither.
    heat = pd.DataFrame({"lat": [37.76], "long": [-122.41], "cases": [3]})
    open_cases = pd.DataFrame(
        {
            "service_request_id": [7],
            "status": ["overdue"],
            "category": ["Graffiti"],
            "service_subtype": [None],
            "requested_datetime": [pd.Timestamp("2024-03-10 20:00", tz="UTC")],
            "upper_at": [pd.Timestamp("2024-03-12 20:00", tz="UTC")],
            "hours_late": [3.0],
            "lat": [37.76],
            "long": [-122.41],
        }
    )
    for fmap in (
        maps.cases_map(heat, _markers(), pd.DataFrame(), tiles=None),
        maps.backlog_map(open_cases, tiles=None),
        maps.picker_map(37.76, -122.41, tiles=None),
    ):
        html = _render(fmap)
        assert "jquery" not in html.lower()
        assert "$(" not in html and "$." not in html


def test_popups_show_predictions_for_open_cases_and_escape_text():
    html = _render(
        maps.cases_map(pd.DataFrame(), _markers(), pd.DataFrame(), predicted={1: 42.25}, tiles=None)
    )
    assert "predicted: 42.2 h" in html
    # Text is HTML-escaped, then JSON-encoded into the marker data array.
    assert "Tree \\u0026lt;Maintenance\\u0026gt;" in html
    assert "<Maintenance>" not in html
    assert "opened 2024-03-10 13:00" in html  # shown in San Francisco time
    html = _render(maps.cases_map(pd.DataFrame(), _markers(), pd.DataFrame(), tiles=None))
    assert "predicted: unavailable" in html


def _open_cases() -> pd.DataFrame:
    at = pd.Timestamp("2024-03-10 20:00", tz="UTC")
    return pd.DataFrame(
        {
            "service_request_id": [7, 8],
            "status": ["overdue", "on_time"],
            "category": ["Graffiti", "Tree"],
            "service_subtype": [None, "Pole"],
            "requested_datetime": [at, at],
            "upper_at": [at, at],
            "hours_late": [3.5, -2.0],
            "lat": [37.76, 37.77],
            "long": [-122.41, -122.42],
        }
    )


def test_the_picked_map_is_sent_to_the_component_as_a_first_render_would_send_it(monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(streamlit_folium, "_component_func", lambda **kw: sent.append(kw))
    asked: list[dict] = []
    draw = ui.st_folium
    monkeypatch.setattr(ui, "st_folium", lambda fmap, **kw: asked.append(kw) or draw(fmap, **kw))
    # st_folium's default renders the map first; draw_map leaves that to st_folium.
    streamlit_folium.st_folium(
        maps.picker_map(37.76, -122.41, tiles=None),
        height=320,
        use_container_width=True,
        returned_objects=["last_clicked"],
        key="m",
    )
    ui.draw_map(maps.picker_map(37.76, -122.41, tiles=None), "m", 320, ("last_clicked",))
    assert len(sent) == 2 and [kw["render"] for kw in asked] == [False]

    def same(kw: dict) -> dict:
        # Element ids are random per map.
        return {k: re.sub(r"[0-9a-f]{32}", "id", str(v)) for k, v in kw.items() if k != "on_change"}

    assert same(sent[1]) == same(sent[0])
    assert "circle_marker" in sent[1]["script"]


def test_maps_only_shown_go_whole_into_a_plain_iframe(monkeypatch):
    shown: list[tuple[str, dict]] = []
    monkeypatch.setattr(ui.st, "iframe", lambda src, **kw: shown.append((src, kw)))
    ui.show_map(_cases_map(), height=600)
    ui.show_map(maps.backlog_map(_open_cases(), tiles=None), height=500)
    assert [kw for _, kw in shown] == [{"height": 600}, {"height": 500}]
    for html, _ in shown:
        # A whole document: Leaflet from the vendored copy, the map, and the markers' data.
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
        assert '<script src="/app/static/vendor/leaflet.js"></script>' in html
        assert "L.map(" in html and "L.circleMarker" in html
    # Names escaped for the popup, then for the script: no name can end the script element.
    assert "#1f77b4" in shown[0][0] and r"Tree \u0026lt;Maintenance\u0026gt;" in shown[0][0]
    assert "due by" in shown[1][0]


def test_tiles_setting():
    assert maps.tiles("none") is None
    assert maps.tiles(" None ") is None
    assert maps.tiles("OpenStreetMap") == "OpenStreetMap"


def _series(chart, by: str, value: str) -> dict[str, list]:
    """Return each `by` value's `value` column in row order from a chart's data."""
    return {k: list(g[value]) for k, g in chart.data.groupby(by, sort=False)}


def test_daily_lines_fill_missing_days_with_zero():
    volume = pd.DataFrame(
        {
            "day": [date(2024, 3, 1), date(2024, 3, 3), date(2024, 3, 3)],
            "category": ["A", "A", "B"],
            "cases": [2, 5, 1],
        }
    )
    chart = charts.daily_lines(volume, "t", "day")
    assert _series(chart, "category", "cases") == {"A": [2, 0, 5], "B": [0, 0, 1]}
    assert chart.to_dict()["encoding"]["x"]["scale"] == {"type": "utc"}


def test_weekly_lines_and_monthly_backlog_fill_no_days_between_periods():
    volume = pd.DataFrame(
        {
            "day": [date(2024, 3, 4), date(2024, 3, 18), date(2024, 3, 18)],
            "category": ["A", "A", "B"],
            "cases": [2, 5, 1],
        }
    )
    chart = charts.daily_lines(volume, "t", "week")
    assert _series(chart, "category", "cases") == {"A": [2, 5], "B": [0, 1]}
    assert chart.to_dict()["encoding"]["y"]["title"] == "cases per week"
    backlog = pd.DataFrame(
        {"day": [date(2024, 1, 31), date(2024, 2, 29)], "age_bucket": ["90+ d", "90+ d"],
         "open_cases": [4, 5]}
    )  # fmt: skip
    assert _series(charts.backlog_area(backlog, "t", "month"), "age_bucket", "open_cases") == {
        "90+ d": [4, 5]
    }


def test_pie_folds_the_tail_into_other():
    counts = pd.DataFrame({"label": list("abcde"), "cases": [50, 20, 10, 5, 1]})
    data = charts.pie(counts, "t", top=3).data
    assert dict(zip(data["label"], data["cases"], strict=True)) == {
        "a": 50,
        "b": 20,
        "c": 10,
        "other": 6,
    }


def test_bar_shows_the_top_labels_largest_on_top():
    counts = pd.DataFrame({"label": list("abc"), "cases": [9, 5, 1]})
    chart = charts.bar(counts, "t", top=2)
    assert list(chart.data["label"]) == ["a", "b"]
    assert chart.to_dict()["encoding"]["y"]["sort"] == "-x"


def test_stacked_bar_folds_small_categories_and_orders_districts_by_total():
    counts = pd.DataFrame(
        {
            "district": ["A", "A", "B", "B", "B"],
            "category": ["x", "y", "x", "z", "w"],
            "cases": [1, 2, 5, 1, 1],
        }
    )
    chart = charts.stacked_bar(counts, "t", top=2)
    cells = {(d, c): n for d, c, n in chart.data[["district", "category", "cases"]].values}
    assert cells == {("B", "x"): 5, ("A", "y"): 2, ("A", "x"): 1, ("B", "other"): 2}
    encoding = chart.to_dict()["encoding"]
    assert encoding["x"]["sort"] == ["B", "A"]
    assert encoding["color"]["sort"] == ["x", "y", "other"]
    assert encoding["y"]["stack"] == "zero"


def test_backlog_area_stacks_age_buckets_youngest_first_and_fills_days():
    backlog = pd.DataFrame(
        {
            "day": [date(2024, 3, 1), date(2024, 3, 1), date(2024, 3, 3)],
            "age_bucket": ["90+ d", "0-1 d", "90+ d"],
            "open_cases": [4, 2, 5],
        }
    )
    chart = charts.backlog_area(backlog, "t", "day")
    assert _series(chart, "age_bucket", "open_cases") == {"0-1 d": [2, 0, 0], "90+ d": [4, 0, 5]}
    encoding = chart.to_dict()["encoding"]
    assert encoding["color"]["sort"] == ["0-1 d", "90+ d"] and encoding["y"]["stack"] == "zero"
    # The stack's order: youngest bucket first, whatever order the rows come in.
    ranks = chart.data.drop_duplicates("age_bucket").set_index("age_bucket")["rank"]
    assert ranks["0-1 d"] < ranks["90+ d"]


def test_sla_chart_stacks_outcomes_and_draws_the_share_on_its_own_axis():
    sla = pd.DataFrame(
        {
            "day": [date(2024, 3, 1), date(2024, 3, 2)],
            "met": [3, 0],
            "missed": [1, 0],
            "pending": [0, 2],
            "share_met": [0.75, None],
        }
    )
    chart = charts.sla_chart(sla, "t")
    bars, share = (layer.data for layer in chart.layer)
    assert _series(chart.layer[0], "outcome", "cases") == {
        "met": [3, 0],
        "missed": [1, 0],
        "pending": [0, 2],
    }
    assert list(share["share_met"]) == [0.75]  # a day with nothing decided draws no point
    spec = chart.to_dict()
    assert spec["resolve"] == {"scale": {"y": "independent"}}
    assert spec["layer"][1]["encoding"]["y"]["scale"] == {"domain": [0, 1]}
    assert len(bars) == 6


def test_resolution_lines_draw_median_and_p90_per_month():
    monthly = pd.DataFrame(
        {"month": [date(2024, 1, 1), date(2024, 2, 1)], "p50_hours": [5.0, None],
         "p90_hours": [50.0, 70.0]}
    )  # fmt: skip
    chart = charts.resolution_lines(monthly, "t")
    assert _series(chart, "stat", "hours") == {"median": [5.0], "p90": [50.0, 70.0]}


def test_overdue_lines_draw_overdue_and_at_risk_per_recorded_day_in_the_maps_colours():
    history = pd.DataFrame(
        {"day": [date(2024, 3, 1), date(2024, 3, 4)], "overdue": [4, 6], "at_risk": [1, 0]}
    )
    chart = charts.overdue_lines(history, "t")
    # 2024-03-02 and 03 were not recorded: no point, not a zero.
    assert _series(chart, "status", "cases") == {"overdue": [4, 6], "at risk": [1, 0]}
    scale = chart.to_dict()["encoding"]["color"]["scale"]
    assert scale["range"] == [maps.STATUS_COLORS["overdue"], maps.STATUS_COLORS["at_risk"]]


def test_backlog_map_colours_cases_by_status_and_escapes_text():
    now = pd.Timestamp("2024-03-10 20:00", tz="UTC")
    cases = pd.DataFrame(
        {
            "service_request_id": [7, 8, 9],
            "status": ["overdue", "on_time", "at_risk"],
            "category": ["<b>x</b>", "Graffiti", "Graffiti"],
            "service_subtype": [None, "Pole", "Pole"],
            "requested_datetime": [now, now, now],
            "upper_at": [now, now, now],
            "hours_late": [3.5, -20.0, -2.0],
            "lat": [37.76, 37.77, None],
            "long": [-122.41, -122.42, None],
        }
    )
    html = _render(maps.backlog_map(cases, tiles=None))
    assert maps.STATUS_COLORS["overdue"] in html and maps.STATUS_COLORS["on_time"] in html
    assert maps.STATUS_COLORS["at_risk"] not in html  # the case without a location is left out
    assert "3.5 h late" in html and "20.0 h left" in html
    assert "<b>x</b>" not in html
    assert "https://" not in html
