"""Map and chart builders: offline assets, popups, neighborhood circles, chart shapes."""

from __future__ import annotations

from datetime import date

import pandas as pd

from sf311.dashboard import charts, maps


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


def test_map_uses_only_vendored_assets():
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
    html = _render(maps.cases_map(heat, _markers(), neighborhoods, tiles=None))
    assert "/app/static/vendor/leaflet.js" in html
    assert "/app/static/vendor/leaflet.markercluster.js" in html
    assert "/app/static/vendor/leaflet_heat.min.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assert '"maxZoom": 19' in html  # MarkerCluster needs it when no tile layer sets one


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


def test_tiles_setting():
    assert maps.tiles("none") is None
    assert maps.tiles(" None ") is None
    assert maps.tiles("OpenStreetMap") == "OpenStreetMap"


def test_daily_lines_fill_missing_days_with_zero():
    volume = pd.DataFrame(
        {
            "day": [date(2024, 3, 1), date(2024, 3, 3), date(2024, 3, 3)],
            "category": ["A", "A", "B"],
            "cases": [2, 5, 1],
        }
    )
    fig = charts.daily_lines(volume, "t")
    lines = {t.name: list(t.y) for t in fig.data}
    assert lines == {"A": [2, 0, 5], "B": [0, 0, 1]}


def test_pie_folds_the_tail_into_other():
    counts = pd.DataFrame({"label": list("abcde"), "cases": [50, 20, 10, 5, 1]})
    fig = charts.pie(counts, "t", top=3)
    assert dict(zip(fig.data[0].labels, fig.data[0].values, strict=True)) == {
        "a": 50,
        "b": 20,
        "c": 10,
        "other": 6,
    }


def test_bar_shows_the_top_labels_largest_on_top():
    counts = pd.DataFrame({"label": list("abc"), "cases": [9, 5, 1]})
    fig = charts.bar(counts, "t", top=2)
    assert list(fig.data[0].y) == ["b", "a"]
