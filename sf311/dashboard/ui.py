"""Streamlit pages of the dashboard (one `*_page(settings)` per script in dashboard/), their
sidebar filters and loaders cached on the DSN and the hashable Filters."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime, timedelta

import pandas as pd
import psycopg
import streamlit as st
from streamlit_folium import st_folium

from sf311.contract.city import LOCAL_ZONE
from sf311.dashboard import charts, client, maps, queries
from sf311.dashboard.filters import Filters
from sf311.settings import Settings

TTL_SECONDS = 60
OPTIONS_TTL_SECONDS = 300
DEFAULT_DAYS = 30
RESOLVED_ONLY = (
    "of resolved cases closed in range: duplicates, transfers, cancellations, closures whose "
    "notes say nothing and cases closed before they opened are left out"
)


def _dsn(settings: Settings) -> str:
    return settings.analyst_dsn.get_secret_value()


@st.cache_data(ttl=OPTIONS_TTL_SECONDS, show_spinner=False)
def load_options(dsn: str) -> queries.Options:
    """Return the filter options (cached)."""
    with queries.connect(dsn) as conn:
        return queries.options(conn)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_overview(dsn: str, filters: Filters) -> tuple[queries.Metrics, queries.Freshness]:
    """Return the headline metrics and the pipeline freshness (cached)."""
    with queries.connect(dsn) as conn:
        return queries.metrics(conn, filters), queries.freshness(conn)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_trend(dsn: str, filters: Filters) -> pd.DataFrame:
    """Return the daily volume of the top categories (cached)."""
    with queries.connect(dsn) as conn:
        return queries.daily_volume(conn, filters)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_charts(dsn: str, filters: Filters) -> dict[str, pd.DataFrame]:
    """Return the frames of every chart: breakdowns, daily volume, resolution bins (cached)."""
    with queries.connect(dsn) as conn:
        frames = queries.breakdowns(conn, filters)
        frames["daily"] = queries.daily_volume(conn, filters)
        frames["resolution"] = queries.resolution_histogram(conn, filters)
    return frames


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_map(dsn: str, filters: Filters) -> dict[str, pd.DataFrame]:
    """Return the frames of the map layers: heat cells, recent markers, neighborhoods (cached)."""
    with queries.connect(dsn) as conn:
        return {
            "heat": queries.heat_cells(conn, filters),
            "markers": queries.recent_markers(conn, filters),
            "neighborhoods": queries.neighborhood_stats(conn, filters),
        }


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def predict_open(api_url: str, dsn: str, filters: Filters) -> dict[int, float]:
    """Return predicted hours of the open cases among the map's markers (cached on success)."""
    markers = load_map(dsn, filters)["markers"]
    open_cases = markers[markers["closed_date"].isna()].to_dict("records")
    predictions = client.predict_batch(api_url, open_cases, timeout=5.0)
    return {
        int(c["service_request_id"]): p.hours for c, p in zip(open_cases, predictions, strict=True)
    }


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_context(
    dsn: str, category: str, subtype: str | None, neighborhood: str | None
) -> queries.CaseContext:
    """Return the usual agency, districts and centroid for the prediction form (cached)."""
    with queries.connect(dsn) as conn:
        return queries.case_context(conn, category, subtype, neighborhood)


def _remembered(key: str, default: object) -> str:
    """Return widget key `_key`, seeded from the page-independent value `key` when absent.

    Streamlit drops a widget's value when a page without that widget runs, so each filter is
    also kept under its own key and survives moving between pages.
    """
    if f"_{key}" not in st.session_state:
        st.session_state[f"_{key}"] = st.session_state.get(key, default)
    return f"_{key}"


def _multiselect(label: str, key: str, choices: tuple) -> tuple:
    widget = _remembered(key, [])
    # Values that vanished from the choices (a subtype of a category just unselected) go.
    st.session_state[widget] = [v for v in st.session_state[widget] if v in choices]
    picked = st.sidebar.multiselect(label, choices, key=widget)
    st.session_state[key] = picked
    return tuple(picked)


def default_range(options: queries.Options, days: int = DEFAULT_DAYS) -> tuple[date, date]:
    """Return the last `days` days that hold cases (today's when the table is empty)."""
    last = options.last_day or datetime.now(LOCAL_ZONE).date()
    first = options.first_day or last
    return max(first, last - timedelta(days=days - 1)), last


def sidebar_filters(options: queries.Options) -> Filters:
    """Draw the sidebar filters and return the chosen Filters."""
    st.sidebar.header("Filters")
    low, high = options.first_day, options.last_day
    widget = _remembered("range", default_range(options))
    if low and high:
        # A range kept from before the data moved must still lie within the widget's bounds.
        st.session_state[widget] = tuple(min(max(d, low), high) for d in st.session_state[widget])
    chosen = st.sidebar.date_input(
        "Opened between (San Francisco days)", key=widget, min_value=low, max_value=high
    )
    start, end = (chosen[0], chosen[-1]) if isinstance(chosen, tuple | list) else (chosen, chosen)
    st.session_state["range"] = (start, end)
    categories = _multiselect("Category", "categories", options.categories)
    return Filters(
        start=start,
        end=end,
        categories=categories,
        subtypes=_multiselect("Subtype", "subtypes", options.subtypes(categories)),
        neighborhoods=_multiselect("Neighborhood", "neighborhoods", options.neighborhoods),
        districts=_multiselect("Supervisor district", "districts", options.districts),
        statuses=_multiselect("Status", "statuses", options.statuses),
        sources=_multiselect("Source", "sources", options.sources),
    )


def _page_filters(settings: Settings) -> Filters | None:
    try:
        options = load_options(_dsn(settings))
    except psycopg.Error as err:
        st.error(f"The warehouse cannot be read as the analyst role: {err}")
        return None
    if options.last_day is None:
        st.info("The warehouse holds no cases yet: run the ingest and the streaming job.")
    return sidebar_filters(options)


def _delta(now: float | None, before: float | None) -> str | None:
    if now is None or before is None:
        return None
    if before == 0:
        return f"{now - before:+,.0f}"
    return f"{(now - before) / before:+.1%}"


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} h"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def overview_page(settings: Settings) -> None:
    """Draw the overview: headline metrics against the previous period, freshness, trend."""
    st.title("SF 311 cases")
    filters = _page_filters(settings)
    if filters is None:
        return
    metrics, fresh = load_overview(_dsn(settings), filters)
    cur, prev = metrics.current, metrics.previous
    st.caption(
        f"{filters.start:%Y-%m-%d} to {filters.end:%Y-%m-%d} ({filters.days} days), compared "
        f"with {filters.previous().start:%Y-%m-%d} to {filters.previous().end:%Y-%m-%d}."
    )
    cols = st.columns(5)
    cols[0].metric("Cases in range", f"{cur.cases:,}", _delta(cur.cases, prev.cases))
    cols[1].metric("Open now", f"{metrics.open_now:,}", help="opened in range, not closed yet")
    cols[2].metric("Closed in range", f"{cur.closed:,}", _delta(cur.closed, prev.closed))
    cols[3].metric(
        "Median resolution",
        _hours(cur.p50_hours),
        _delta(cur.p50_hours, prev.p50_hours),
        delta_color="inverse",
        help=RESOLVED_ONLY,
    )
    cols[4].metric(
        "P90 resolution",
        _hours(cur.p90_hours),
        _delta(cur.p90_hours, prev.p90_hours),
        delta_color="inverse",
        help=RESOLVED_ONLY,
    )
    st.subheader("Pipeline freshness")
    pipeline = st.columns(4)
    pipeline[0].metric("Last batch committed", _age(fresh.seconds_since))
    pipeline[1].metric("Batches in the last hour", f"{fresh.batches_last_hour:,}")
    pipeline[2].metric("Rows in the last hour", f"{fresh.rows_last_hour:,}")
    lag = (
        f"{fresh.lag_p50_seconds:.1f} s / {fresh.lag_p95_seconds:.1f} s"
        if fresh.lag_p50_seconds is not None and fresh.lag_p95_seconds is not None
        else "n/a"
    )
    pipeline[3].metric("Kafka to warehouse lag p50 / p95", lag)
    st.plotly_chart(
        charts.daily_lines(load_trend(_dsn(settings), filters), "Daily volume, top 5 categories")
    )


def map_page(settings: Settings) -> None:
    """Draw the map: heatmap, clustered recent cases with predictions, neighborhood circles."""
    st.title("Hotspots")
    filters = _page_filters(settings)
    if filters is None:
        return
    layers = load_map(_dsn(settings), filters)
    predicted: dict[int, float] | None = None
    if layers["markers"]["closed_date"].isna().any():
        try:
            predicted = predict_open(settings.api_url, _dsn(settings), filters)
        except (client.ApiUnavailable, client.ApiError) as err:
            st.info(f"Predicted hours are not shown in the popups: {err}")
    st.caption(
        f"Heatmap of {int(layers['heat']['cases'].sum()):,} located cases; "
        f"the {len(layers['markers']):,} newest as markers (red: open); "
        f"{len(layers['neighborhoods']):,} neighborhoods as circles."
    )
    fmap = maps.cases_map(
        layers["heat"],
        layers["markers"],
        layers["neighborhoods"],
        predicted=predicted,
        tiles=maps.tiles(settings.dashboard_tiles),
    )
    st_folium(fmap, height=600, use_container_width=True, returned_objects=[], key="cases_map")


def charts_page(settings: Settings) -> None:
    """Draw the charts: bars by category and neighborhood, a pie, daily lines, resolution bins."""
    st.title("Charts")
    filters = _page_filters(settings)
    if filters is None:
        return
    frames = load_charts(_dsn(settings), filters)
    left, right = st.columns(2)
    left.plotly_chart(charts.bar(frames["category"], "Cases by category"))
    right.plotly_chart(charts.bar(frames["neighborhood"], "Cases by neighborhood"))
    left, right = st.columns(2)
    by = left.radio("Pie by", ("source", "status"), horizontal=True, key="pie_by")
    left.plotly_chart(charts.pie(frames[by], f"Cases by {by}"))
    right.plotly_chart(
        charts.resolution_bars(
            frames["resolution"], "Time to close, resolved cases closed in range"
        ),
    )
    st.plotly_chart(
        charts.daily_lines(frames["daily"], "Daily volume, top 5 categories"),
    )


def _pick(label: str, choices: tuple, key: str) -> str | None:
    return st.selectbox(label, choices, key=key, index=0 if choices else None)


def predict_page(settings: Settings) -> None:
    """Draw the prediction form; call the API and show hours, interval and model version."""
    st.title("Predict time to close")
    try:
        options = load_options(_dsn(settings))
    except psycopg.Error as err:
        st.error(f"The warehouse cannot be read as the analyst role: {err}")
        return
    if not options.categories:
        st.info("The warehouse holds no cases yet, so there is nothing to choose from.")
        return
    left, right = st.columns(2)
    category = left.selectbox("Category", options.categories, key="p_category")
    subtype = left.selectbox("Subtype", options.subtypes((category,)), key="p_subtype")
    neighborhood = left.selectbox("Neighborhood", options.neighborhoods, key="p_neighborhood")
    source = left.selectbox("Source", options.sources, key="p_source")
    now = datetime.now(LOCAL_ZONE).replace(second=0, microsecond=0)
    day = left.date_input("Opened on (San Francisco time)", value=now.date(), key="p_day")
    at = left.time_input("at", value=now.time(), key="p_time")
    context = load_context(_dsn(settings), category, subtype, neighborhood)
    # A location picked on the map belongs to the neighborhood it was picked for.
    picked = st.session_state.get("p_location")
    if picked and picked[0] != neighborhood:
        picked = None
    lat = picked[1] if picked else context.lat or maps.SF_CENTER[0]
    long = picked[2] if picked else context.long or maps.SF_CENTER[1]
    with right:
        st.caption("Click the map to place the case.")
        clicked = st_folium(
            maps.picker_map(lat, long, tiles=maps.tiles(settings.dashboard_tiles)),
            height=320,
            use_container_width=True,
            returned_objects=["last_clicked"],
            key="p_map",
        )
    if clicked and clicked.get("last_clicked"):
        point = clicked["last_clicked"]
        if (point["lat"], point["lng"]) != (lat, long):
            st.session_state["p_location"] = (neighborhood, point["lat"], point["lng"])
            lat, long = point["lat"], point["lng"]
    right.write(f"Location: {lat:.5f}, {long:.5f}")
    case = {
        "requested_datetime": datetime.combine(day, at, tzinfo=LOCAL_ZONE),
        "service_name": category,
        "service_subtype": subtype,
        "neighborhood": neighborhood,
        "source": source,
        "lat": lat,
        "long": long,
        **{k: v for k, v in asdict(context).items() if k not in ("lat", "long")},
    }
    if not st.button("Predict", type="primary", key="p_go"):
        return
    try:
        prediction = client.predict(settings.api_url, case)
    except client.ApiUnavailable as err:
        st.error(f"The prediction API is down, so no prediction can be made now. ({err})")
        return
    except client.ApiError as err:
        st.error(f"The prediction API refused this case: {err}")
        return
    st.metric("Predicted time to close", _hours(prediction.hours))
    if prediction.lower is not None and prediction.upper is not None:
        st.write(f"80% interval: {prediction.lower:,.1f} h to {prediction.upper:,.1f} h")
    st.caption(f"Model version: {prediction.model_version or 'not reported'}")
    if prediction.unseen:
        st.warning(
            "Training never saw this case's "
            + ", ".join(prediction.unseen)
            + ": the prediction leans on its other features."
        )
