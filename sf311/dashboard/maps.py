"""Folium maps of the dashboard: case heatmap, clustered recent cases, neighborhood circles."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import folium
import pandas as pd
from folium import plugins

from sf311.contract.city import LOCAL_TZ

SF_CENTER = (37.7599, -122.4370)
MAX_ZOOM = 19
# Folium's CDN links -> files in dashboard/static/vendor, so the map draws with loopback only.
STATIC_BASE = "/app/static/vendor"
LOCAL_ASSETS: dict[str, str] = {
    "leaflet": "leaflet.js",
    "leaflet_css": "leaflet.css",
    "markerclusterjs": "leaflet.markercluster.js",
    "markerclustercss": "MarkerCluster.css",
    "markerclusterdefaultcss": "MarkerCluster.Default.css",
    "leaflet-heat.js": "leaflet_heat.min.js",
}
OPEN_COLOR, CLOSED_COLOR = "#d62728", "#1f77b4"
_MARKER_JS = """function (row) {
    var marker = L.circleMarker(new L.LatLng(row[0], row[1]),
        {radius: 6, color: row[2], fill: true, fillOpacity: 0.8});
    marker.bindPopup(row[3], {maxWidth: 280});
    return marker;
}"""
# Color ramp of median resolution: fast (green) to slow (red), on log hours.
_RAMP = ("#1a9850", "#91cf60", "#d9ef8b", "#fee08b", "#fc8d59", "#d73027")


def tiles(setting: str) -> str | None:
    """Return folium's `tiles` argument for a tiles setting ("none" means no basemap)."""
    return None if setting.strip().lower() in ("", "none") else setting


def localize_assets(fmap: folium.Map, base: str = STATIC_BASE) -> folium.Map:
    """Return `fmap` with every JS/CSS link pointing at the vendored copies under `base`.

    Links the map does not need are dropped: Bootstrap, icon fonts, and jQuery, which only
    folium's Popup elements and objects kept in front use (these maps have neither).
    """

    def walk(element: folium.Element):
        yield element
        for child in element._children.values():
            yield from walk(child)

    for element in walk(fmap):
        for attr in ("default_js", "default_css"):
            links = getattr(element, attr, None)
            if links:
                setattr(
                    element,
                    attr,
                    [(n, f"{base}/{LOCAL_ASSETS[n]}") for n, _ in links if n in LOCAL_ASSETS],
                )
    return fmap


def _color(hours: float | None, slowest: float) -> str:
    if hours is None or not math.isfinite(hours) or slowest <= 0:
        return "#808080"
    share = math.log1p(max(hours, 0.0)) / math.log1p(slowest)
    return _RAMP[min(int(share * len(_RAMP)), len(_RAMP) - 1)]


def _popup(case: Mapping, predicted: Mapping[int, float] | None) -> str:
    opened = pd.Timestamp(case["requested_datetime"]).tz_convert(LOCAL_TZ)
    lines = [
        f"<b>{html.escape(str(case['service_name']))}</b>",
        html.escape(str(case.get("service_subtype") or "")),
        f"opened {opened:%Y-%m-%d %H:%M}",
        f"status: {html.escape(str(case.get('status_description') or ''))}",
    ]
    if pd.isna(case.get("closed_date")):
        hours = (predicted or {}).get(int(case["service_request_id"]))
        lines.append(f"predicted: {hours:.1f} h" if hours is not None else "predicted: unavailable")
    return "<br>".join(lines)


def cases_map(
    heat: pd.DataFrame,
    markers: pd.DataFrame,
    neighborhoods: pd.DataFrame,
    predicted: Mapping[int, float] | None = None,
    tiles: str | None = "OpenStreetMap",
) -> folium.Map:
    """Return a map with layers: heatmap, clustered recent cases, neighborhood circles.

    `heat` has lat, long, cases; `markers` the rows of queries.recent_markers; `neighborhoods`
    the rows of queries.neighborhood_stats; `predicted` maps open case ids to predicted hours.
    """
    # maxZoom on the map itself: without a tile layer Leaflet has none and MarkerCluster fails.
    fmap = folium.Map(
        location=SF_CENTER, zoom_start=12, tiles=tiles, control_scale=True, maxZoom=MAX_ZOOM
    )
    if not heat.empty:
        top = float(heat["cases"].max())
        points = [
            [round(float(r.lat), 5), round(float(r.long), 5), round(float(r.cases) / top, 4)]
            for r in heat.itertuples(index=False)
        ]
        plugins.HeatMap(
            points, name="Heatmap of cases", radius=14, blur=18, min_opacity=0.3
        ).add_to(fmap)
    # One data array built into markers in the browser: folium Popup elements render slowly.
    plugins.FastMarkerCluster(
        [
            [
                round(float(case["lat"]), 5),
                round(float(case["long"]), 5),
                OPEN_COLOR if pd.isna(case.get("closed_date")) else CLOSED_COLOR,
                _popup(case, predicted),
            ]
            for case in markers.to_dict("records")
        ],
        callback=_MARKER_JS,
        name="Recent cases",
    ).add_to(fmap)
    layer = folium.FeatureGroup(name="Neighborhoods: volume (size), median hours (color)")
    if not neighborhoods.empty:
        biggest = float(neighborhoods["cases"].max())
        slowest = float(neighborhoods["p50_hours"].max(skipna=True) or 0.0)
        for n in neighborhoods.to_dict("records"):
            hours = None if pd.isna(n["p50_hours"]) else float(n["p50_hours"])
            label = f"{n['neighborhood']}: {int(n['cases']):,} cases" + (
                f", median {hours:.1f} h" if hours is not None else ""
            )
            folium.CircleMarker(
                location=(float(n["lat"]), float(n["long"])),
                radius=6 + 24 * math.sqrt(float(n["cases"]) / biggest),
                color=_color(hours, slowest),
                fill=True,
                fill_opacity=0.45,
                weight=1,
                tooltip=html.escape(label),
            ).add_to(layer)
    layer.add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    return localize_assets(fmap)


STATUS_COLORS = {"overdue": "#d62728", "at_risk": "#ff7f0e", "on_time": "#2ca02c"}


def _local_minutes(times: pd.Series) -> pd.Series:
    return pd.to_datetime(times, utc=True).dt.tz_convert(LOCAL_TZ).dt.strftime("%Y-%m-%d %H:%M")


def _status_popups(cases: pd.DataFrame) -> pd.Series:
    """Return each case's popup HTML, built column-wise: one case at a time took 50 ms of a
    Backlog page's 2,000 cases."""
    late = cases["hours_late"].astype(float)
    ends = late.gt(0).map({True: " h late", False: " h left"})
    how_late = late.abs().map("{:,.1f}".format) + ends
    return (
        "<b>" + cases["category"].astype(str).map(html.escape) + "</b> #"
        + cases["service_request_id"].astype("int64").astype(str)
        + "<br>" + cases["service_subtype"].fillna("").astype(str).map(html.escape)
        + "<br>opened " + _local_minutes(cases["requested_datetime"])
        + "<br>due by " + _local_minutes(cases["upper_at"])
        + " (upper end of the 80% interval)<br>" + how_late
    )  # fmt: skip


def backlog_map(cases: pd.DataFrame, tiles: str | None = "OpenStreetMap") -> folium.Map:
    """Return a map of open cases clustered, each coloured by status (STATUS_COLORS).

    `cases` has the rows of queries.open_cases; cases without a location are left out.
    """
    fmap = folium.Map(
        location=SF_CENTER, zoom_start=12, tiles=tiles, control_scale=True, maxZoom=MAX_ZOOM
    )
    located = cases.dropna(subset=["lat", "long"])
    rows = pd.DataFrame(
        {
            "lat": located["lat"].astype(float).round(5),
            "long": located["long"].astype(float).round(5),
            "color": located["status"].map(STATUS_COLORS).fillna("#808080"),
            "popup": _status_popups(located),
        }
    )
    markers = plugins.FastMarkerCluster(
        rows.values.tolist(), callback=_MARKER_JS, name="Open cases"
    )
    markers.add_to(fmap)
    return localize_assets(fmap)


def picker_map(lat: float, long: float, tiles: str | None = "OpenStreetMap") -> folium.Map:
    """Return a small map with one marker at (lat, long), for picking a case's location."""
    fmap = folium.Map(location=(lat, long), zoom_start=14, tiles=tiles, maxZoom=MAX_ZOOM)
    folium.CircleMarker(location=(lat, long), radius=8, color="#d62728", fill=True).add_to(fmap)
    return localize_assets(fmap)
