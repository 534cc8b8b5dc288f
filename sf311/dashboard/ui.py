"""Streamlit pages of the dashboard (one `*_page(settings)` per script in dashboard/), their
sidebar filters and loaders cached on the DSN and the hashable Filters."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any, BinaryIO

import folium
import pandas as pd
import psycopg
import streamlit as st
from streamlit_folium import st_folium

from sf311.contract.city import LOCAL_ZONE
from sf311.dashboard import charts, client, maps, queries
from sf311.dashboard.filters import GOLD_COLUMNS, BadLinkRange, Filters, link_range, unapplied
from sf311.settings import Settings

TTL_SECONDS = 60
OPTIONS_TTL_SECONDS = 300
DEFAULT_DAYS = 30
PER_GRAIN = {"day": "Daily", "week": "Weekly", "month": "Monthly"}
CSV_MAX_ROWS = 100_000
LATEST_ROWS = 50
RESOLVED_ONLY = (
    "of resolved cases closed in the months the range touches (gold.resolution_stats): "
    "duplicates, transfers, cancellations, closures whose notes say nothing and cases closed "
    "before they opened are left out. Over several categories or neighborhoods it is the mean "
    "of their percentiles weighted by closed cases, an approximation."
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


# The aggregates the pages draw, each read from gold by one query of `queries`.
GOLD_READS: dict[str, Callable[[psycopg.Connection, Filters], Any]] = {
    "trend": queries.daily_volume,
    "backlog": queries.backlog_history,
    "breakdowns": queries.breakdowns,
    "resolution": queries.resolution_monthly,
    "sla": queries.sla,
}


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_gold(dsn: str, read: str, filters: Filters) -> Any:
    """Return the frames of aggregate `read` (a key of GOLD_READS) over `filters` (cached)."""
    with queries.connect(dsn) as conn:
        return GOLD_READS[read](conn, filters)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_overdue_history(dsn: str, filters: Filters) -> pd.DataFrame:
    """Return the overdue and at-risk cases recorded per day of `filters` (cached)."""
    with queries.connect(dsn) as conn:
        return queries.overdue_history(conn, filters)


@st.cache_data(ttl=OPTIONS_TTL_SECONDS, show_spinner=False)
def load_centroids(dsn: str) -> pd.DataFrame:
    """Return the neighborhoods' centroids (cached like the options: they hardly move)."""
    with queries.connect(dsn) as conn:
        return queries.neighborhood_centroids(conn)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_map(dsn: str, filters: Filters) -> dict[str, pd.DataFrame]:
    """Return the frames of the map layers: heat cells, recent markers, neighborhoods (cached)."""
    centroids = load_centroids(dsn)
    with queries.connect(dsn) as conn:
        return {
            "heat": queries.heat_cells(conn, filters),
            "markers": queries.recent_markers(conn, filters),
            "neighborhoods": queries.neighborhood_stats(conn, filters, centroids),
        }


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_cases(dsn: str, filters: Filters, cap: int) -> tuple[pd.DataFrame, int]:
    """Return the newest cases and the filtered count, counted up to `cap` + 1 (cached)."""
    with queries.connect(dsn) as conn:
        return queries.latest_cases(conn, filters, LATEST_ROWS), queries.count_capped(
            conn, filters, cap
        )


def csv_file(dsn: str, filters: Filters, cap: int) -> BinaryIO:
    """Return the CSV of the newest `cap` filtered cases, rewound.

    Copied from Postgres chunk by chunk into the buffer Streamlit serves; Streamlit keeps the
    finished file in memory while it serves it, which the cap bounds.
    """
    out = io.BytesIO()
    with queries.connect(dsn) as conn:
        queries.write_csv(conn, filters, out, cap)
    out.seek(0)
    return out


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_open_cases(dsn: str, filters: Filters) -> pd.DataFrame:
    """Return the latest open scored cases by hours late (cached)."""
    with queries.connect(dsn) as conn:
        return queries.open_cases(conn, filters)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def load_open_counts(dsn: str, filters: Filters) -> dict[str, int]:
    """Return the open scored cases per status (cached)."""
    with queries.connect(dsn) as conn:
        return queries.open_status_counts(conn, filters)


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
    try:
        linked = link_range(st.query_params)
    except BadLinkRange as err:
        st.warning(f"{err}: showing the last {DEFAULT_DAYS} days instead.")
        linked = None
    widget = _remembered("range", linked or default_range(options))
    if low and high:
        # A range kept from before the data moved must still lie within the widget's bounds.
        st.session_state[widget] = tuple(min(max(d, low), high) for d in st.session_state[widget])
    chosen = st.sidebar.date_input(
        "Opened between (San Francisco days)", key=widget, min_value=low, max_value=high
    )
    start, end = (chosen[0], chosen[-1]) if isinstance(chosen, tuple | list) else (chosen, chosen)
    st.session_state["range"] = (start, end)
    # The address names the range, so a link shares what this page shows.
    st.query_params.update({"from": start.isoformat(), "to": end.isoformat()})
    categories = _multiselect("Category", "categories", options.categories)
    return Filters(
        start=start,
        end=end,
        categories=categories,
        subtypes=_multiselect("Subtype", "subtypes", options.subtypes(categories)),
        neighborhoods=_multiselect("Neighborhood", "neighborhoods", options.neighborhoods),
        districts=_multiselect("Supervisor district", "districts", options.districts),
        police_districts=_multiselect(
            "Police district", "police_districts", options.police_districts
        ),
        sources=_multiselect("Source", "sources", options.sources),
    )


def _unreadable(err: psycopg.Error) -> None:
    if isinstance(err, psycopg.errors.UndefinedTable):
        st.error(
            f"A table the dashboard reads is missing ({err}): run `sf311 db migrate` and the "
            "gold job (`sf311 replay` rebuilds gold)."
        )
    else:
        st.error(f"The warehouse cannot be read as the analyst role: {err}")


def _page_filters(settings: Settings) -> Filters | None:
    try:
        options = load_options(_dsn(settings))
    except psycopg.Error as err:
        _unreadable(err)
        return None
    if options.last_day is None:
        st.info("The warehouse holds no cases yet: run the ingest and the streaming job.")
    return sidebar_filters(options)


def _note_unapplied(filters: Filters, tables: tuple[str, ...], what: str) -> None:
    """Say which chosen filters the gold `tables` behind `what` cannot apply."""
    lacking = {label for t in tables for label in unapplied(filters, GOLD_COLUMNS[t])}
    missed = [label for label in unapplied(filters, {}) if label in lacking]
    if missed:
        st.info(
            f"{what} ignore the {', '.join(missed)} filter{'s' if len(missed) > 1 else ''}: "
            "the gold tables they read are not broken down that way."
        )


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
    """Draw the overview: headline metrics against the previous period, freshness, trend and
    backlog history."""
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
    _note_unapplied(
        filters,
        ("gold.daily_volume", "gold.resolution_stats", "gold.backlog_daily"),
        "The backlog and resolution figures",
    )
    cols = st.columns(5)
    cols[0].metric("Cases in range", f"{cur.cases:,}", _delta(cur.cases, prev.cases))
    cols[1].metric(
        "Open at end of range",
        "n/a" if metrics.open_at_end is None else f"{metrics.open_at_end:,}",
        help=f"open at the end of {metrics.open_day or filters.end} (gold.backlog_daily, "
        "by category only)",
    )
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
    st.altair_chart(
        charts.daily_lines(
            load_gold(_dsn(settings), "trend", filters),
            f"{PER_GRAIN[filters.grain]} volume, top 5 categories",
            filters.grain,
        )
    )
    st.altair_chart(
        charts.backlog_area(
            load_gold(_dsn(settings), "backlog", filters),
            f"Backlog: open cases at the end of each {filters.grain}, by age",
            filters.grain,
        )
    )


def map_page(settings: Settings) -> None:
    """Draw the map: heatmap, clustered recent cases with predictions, neighborhood circles."""
    st.title("Hotspots")
    filters = _page_filters(settings)
    if filters is None:
        return
    _note_unapplied(filters, ("gold.daily_volume",), "Neighborhood circles")
    layers = load_map(_dsn(settings), filters)
    predicted: dict[int, float] | None = None
    if layers["markers"]["closed_date"].isna().any():
        try:
            predicted = predict_open(settings.api_url, _dsn(settings), filters)
        except (client.ApiUnavailable, client.ApiError) as err:
            st.info(f"Predicted hours are not shown in the popups: {err}")
    st.caption(
        f"Heatmap of {int(layers['heat']['cases'].sum()):,} located cases"
        f"{' (the newest only)' if layers['heat']['cases'].sum() >= queries.HEAT_POINTS else ''}; "
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
    show_map(fmap, height=600)


def charts_page(settings: Settings) -> None:
    """Draw the charts: bars, a pie, district x category, daily lines, resolution and SLA."""
    st.title("Charts")
    filters = _page_filters(settings)
    if filters is None:
        return
    _note_unapplied(filters, ("gold.daily_volume",), "Volume charts")
    dsn = _dsn(settings)
    # Each chart is sent as soon as its query returns: the browser draws it while the next
    # query runs, instead of drawing all seven after the last.
    frames = load_gold(dsn, "breakdowns", filters)
    left, right = st.columns(2)
    left.altair_chart(charts.bar(frames["category"], "Cases by category"))
    right.altair_chart(charts.bar(frames["neighborhood"], "Cases by neighborhood"))
    left, right = st.columns(2)
    by = left.radio("Pie by", ("source", "police district"), horizontal=True, key="pie_by")
    left.altair_chart(charts.pie(frames[by], f"Cases by {by}"))
    right.altair_chart(
        charts.stacked_bar(frames["districts"], "Cases by police district and category")
    )
    st.altair_chart(
        charts.daily_lines(
            load_gold(dsn, "trend", filters),
            f"{PER_GRAIN[filters.grain]} volume, top 5 categories",
            filters.grain,
        )
    )
    left, right = st.columns(2)
    with left:
        _note_unapplied(filters, ("gold.resolution_stats",), "Resolution times")
        st.altair_chart(
            charts.resolution_lines(
                load_gold(dsn, "resolution", filters),
                "Time to close by month closed, resolved cases",
            )
        )
    with right:
        _note_unapplied(filters, ("gold.sla_daily",), "SLA figures")
        st.altair_chart(
            charts.sla_chart(
                load_gold(dsn, "sla", filters),
                f"SLA: cases closed within target, by {filters.grain} opened",
            )
        )


def cases_page(settings: Settings) -> None:
    """Draw the case list: the newest filtered cases and a capped CSV download of all of them."""
    st.title("Cases")
    filters = _page_filters(settings)
    if filters is None:
        return
    dsn = _dsn(settings)
    latest, count = load_cases(dsn, filters, CSV_MAX_ROWS)
    capped = count > CSV_MAX_ROWS
    st.caption(
        f"The {len(latest):,} newest of "
        + (f"more than {CSV_MAX_ROWS:,}" if capped else f"{count:,}")
        + " cases matching the filters (times in San Francisco)."
    )
    shown = latest.copy()
    for column in ("requested_datetime", "closed_date"):
        shown[column] = pd.to_datetime(shown[column], utc=True).dt.tz_convert(LOCAL_ZONE)
    st.dataframe(shown, hide_index=True, key="latest_cases")
    if capped:
        st.warning(
            f"The download is capped at {CSV_MAX_ROWS:,} rows: it holds the newest "
            f"{CSV_MAX_ROWS:,} of the more than {CSV_MAX_ROWS:,} matching cases. Narrow the "
            "filters to get all of them, or query the warehouse as the analyst role."
        )
    st.download_button(
        f"Download {min(count, CSV_MAX_ROWS):,} cases as CSV (times in UTC)",
        data=lambda: csv_file(dsn, filters, CSV_MAX_ROWS),
        file_name=f"sf311_cases_{filters.start:%Y%m%d}_{filters.end:%Y%m%d}.csv",
        mime="text/csv",
        help=f"The newest first, at most {CSV_MAX_ROWS:,} rows; built when clicked.",
        on_click="ignore",
        disabled=count == 0,
        key="csv_download",
    )


def backlog_page(settings: Settings) -> None:
    """Draw the open backlog: counts per status, the map by status, a sortable table and the
    overdue and at-risk cases over the range."""
    st.title("Backlog")
    filters = _page_filters(settings)
    if filters is None:
        return
    st.caption(
        "Every open case the model scored, whenever it opened (the date range applies to the "
        "trend only). Overdue: past the upper end of its 80% interval; at risk: that end falls "
        "within 24 h; on time: later."
    )
    counts_box, map_box, table_box = st.container(), st.container(), st.container()
    st.subheader("Trend")
    st.caption(
        "The cases overdue and at risk as recorded on each day of the range (each week or month "
        "of a long one; overdue_history). The open cases by age over the range are on the "
        "Overview (gold.backlog_daily)."
    )
    _note_unapplied(filters, ("overdue_history",), "The overdue and at-risk counts")
    history_box = st.container()
    dsn = _dsn(settings)
    try:
        # The map and the chart take the browser longest to draw, so they are sent first and
        # drawn while the table and the counts are still being read.
        open_now = load_open_cases(dsn, filters)
        with map_box:
            _backlog_map(settings, open_now)
        with history_box:
            _overdue_trend(settings, load_overdue_history(dsn, filters))
        with table_box:
            _backlog_table(open_now)
        counts = load_open_counts(dsn, filters)
    except psycopg.Error as err:
        with counts_box:
            _unreadable(err)
        return
    for col, status in zip(counts_box.columns(3), queries.OPEN_STATUSES, strict=True):
        col.metric(status.replace("_", " ").capitalize(), f"{counts[status]:,}")


def _overdue_trend(settings: Settings, history: pd.DataFrame) -> None:
    """Draw the overdue and at-risk cases recorded per day, saying when none were."""
    st.altair_chart(charts.overdue_lines(history, "Overdue and at risk, as recorded each day"))
    every = f"every {settings.overdue_history_seconds / 60:g} min"
    st.caption(
        f"Open scored cases past or near their upper end, as the stream recorded them ({every}; "
        "a day's last record stands for the day). No history of predictions exists before the "
        "first record, so days before it, or when the stream was stopped, have no point."
        if not history.empty
        else f"Nothing recorded in this range: the stream records the statuses {every} while "
        "it runs, from the day this warehouse was migrated to 0021."
    )


def _backlog_map(settings: Settings, open_now: pd.DataFrame) -> None:
    """Draw the located open cases on a map coloured by status."""
    box = queries.SF_BOX
    located = open_now[
        open_now["lat"].between(box["lat_min"], box["lat_max"])
        & open_now["long"].between(box["long_min"], box["long_max"])
    ]
    st.caption(
        f"The {len(open_now):,} latest by hours late, {len(located):,} of them on the map "
        "(red: overdue, orange: at risk, green: on time)."
    )
    show_map(maps.backlog_map(located, tiles=maps.tiles(settings.dashboard_tiles)), height=500)


def _backlog_table(open_now: pd.DataFrame) -> None:
    """Draw the open cases as a sortable table, times in San Francisco's zone."""
    table = open_now.drop(columns=["lat", "long"])
    for column in ("requested_datetime", "predicted_close_at", "upper_at"):
        table[column] = pd.to_datetime(table[column], utc=True).dt.tz_convert(LOCAL_ZONE)
    st.dataframe(
        table,
        hide_index=True,
        key="backlog_table",
        column_config={
            "age_hours": st.column_config.NumberColumn("age (h)", format="%.1f"),
            "hours_late": st.column_config.NumberColumn(
                "hours late", format="%.1f", help="negative: hours left before the upper end"
            ),
            "predicted_close_at": st.column_config.DatetimeColumn("predicted close"),
            "upper_at": st.column_config.DatetimeColumn("due by (upper end)"),
        },
    )


def show_map(fmap: folium.Map, height: int) -> None:
    """Draw `fmap`, a map nothing is read back from, as wide as the page in a plain iframe.

    st_folium's component, needed only to report clicks, took the browser about 0.1 s more to
    draw the Backlog page (8M cases, Chromium on 2 cores).
    """
    st.iframe(fmap.get_root().render(), height=height)


def draw_map(
    fmap: folium.Map, key: str, height: int, returned: tuple[str, ...]
) -> dict[str, Any] | None:
    """Draw `fmap` as wide as the page; return the `returned` objects st_folium reports.

    render=False: st_folium renders the map itself, and rendering it once before, its default,
    doubled the Python time without changing what the component gets.
    """
    return st_folium(
        fmap,
        height=height,
        use_container_width=True,
        returned_objects=list(returned),
        key=key,
        render=False,
    )


def _pick(label: str, choices: tuple, key: str) -> str | None:
    return st.selectbox(label, choices, key=key, index=0 if choices else None)


def predict_page(settings: Settings) -> None:
    """Draw the prediction form; call the API and show hours, interval and model version."""
    st.title("Predict time to close")
    try:
        options = load_options(_dsn(settings))
    except psycopg.Error as err:
        _unreadable(err)
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
        clicked = draw_map(
            maps.picker_map(lat, long, tiles=maps.tiles(settings.dashboard_tiles)),
            "p_map",
            height=320,
            returned=("last_clicked",),
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
