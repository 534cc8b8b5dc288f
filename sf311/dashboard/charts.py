"""Plotly figures of the dashboard, built from the frames that sf311.dashboard.queries returns."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

# graph_objects, not plotly.express: express's per-figure overhead buys nothing for fixed shapes.
_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "height": 380}


def _layout(fig: go.Figure, title: str, **extra: object) -> go.Figure:
    fig.update_layout(title={"text": title}, **_LAYOUT, **extra)
    return fig


def bar(counts: pd.DataFrame, title: str, top: int = 15) -> go.Figure:
    """Return a horizontal bar chart of the `top` largest labels of a (label, cases) frame."""
    data = counts.head(top).iloc[::-1]
    fig = go.Figure(go.Bar(x=data["cases"].tolist(), y=data["label"].tolist(), orientation="h"))
    return _layout(fig, title, xaxis_title="cases")


def pie(counts: pd.DataFrame, title: str, top: int = 8) -> go.Figure:
    """Return a pie of a (label, cases) frame, labels past the `top` largest folded in "other"."""
    labels = counts["label"].head(top).tolist()
    values = counts["cases"].head(top).tolist()
    rest = int(counts["cases"].iloc[top:].sum())
    if rest:
        labels, values = [*labels, "other"], [*values, rest]
    fig = go.Figure(go.Pie(labels=labels, values=values, hole=0.35, sort=False))
    return _layout(fig, title)


def _by_day(frame: pd.DataFrame, columns: str, values: str) -> pd.DataFrame:
    """Return `values` summed per day (rows, every day of the span) and `columns` value."""
    wide = frame.pivot_table(
        index="day", columns=columns, values=values, aggfunc="sum", fill_value=0
    )
    days = pd.date_range(wide.index.min(), wide.index.max(), freq="D").date
    return wide.reindex(days, fill_value=0)


def daily_lines(volume: pd.DataFrame, title: str) -> go.Figure:
    """Return one line per category of a (day, category, cases) frame, missing days as 0."""
    fig = go.Figure()
    if not volume.empty:
        wide = _by_day(volume, "category", "cases")
        for category in wide.columns:
            fig.add_trace(
                go.Scatter(
                    x=list(wide.index),
                    y=wide[category].tolist(),
                    mode="lines",
                    name=str(category),
                )
            )
    return _layout(fig, title, yaxis_title="cases per day", legend_title=None)


def stacked_bar(counts: pd.DataFrame, title: str, top: int = 8) -> go.Figure:
    """Return bars per district stacked by category of a (district, category, cases) frame.

    Categories past the `top` largest are folded into "other"; districts by total, largest first.
    """
    fig = go.Figure()
    if not counts.empty:
        totals = counts.groupby("category")["cases"].sum().sort_values(ascending=False)
        kept = set(totals.index[:top])
        folded = counts.assign(
            category=counts["category"].where(counts["category"].isin(kept), "other")
        )
        wide = folded.pivot_table(
            index="district", columns="category", values="cases", aggfunc="sum", fill_value=0
        )
        wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False).index]
        order = [c for c in totals.index[:top]] + (["other"] if "other" in wide.columns else [])
        for category in order:
            fig.add_trace(go.Bar(x=list(wide.index), y=wide[category].tolist(), name=str(category)))
    return _layout(fig, title, barmode="stack", yaxis_title="cases", legend_title=None)


AGE_BUCKETS = ("0-1 d", "1-7 d", "7-30 d", "30-90 d", "90+ d")


def backlog_area(backlog: pd.DataFrame, title: str) -> go.Figure:
    """Return open cases per day stacked by age bucket of a (day, age_bucket, open_cases) frame,
    youngest at the bottom, missing days as 0."""
    fig = go.Figure()
    if not backlog.empty:
        wide = _by_day(backlog, "age_bucket", "open_cases")
        for bucket in [b for b in AGE_BUCKETS if b in wide.columns]:
            fig.add_trace(
                go.Scatter(
                    x=list(wide.index),
                    y=wide[bucket].tolist(),
                    mode="lines",
                    stackgroup="age",
                    name=bucket,
                )
            )
    return _layout(fig, title, yaxis_title="open cases", legend_title="age")


def sla_chart(sla: pd.DataFrame, title: str) -> go.Figure:
    """Return met / missed / pending cases stacked per day opened and the share met as a line
    on a second axis, from a (day, met, missed, pending, share_met) frame."""
    fig = go.Figure()
    if not sla.empty:
        days = list(sla["day"])
        for column, color in (("met", "#2ca02c"), ("missed", "#d62728"), ("pending", "#bbbbbb")):
            fig.add_trace(go.Bar(x=days, y=sla[column].tolist(), name=column, marker_color=color))
        share = [None if pd.isna(v) else float(v) for v in sla["share_met"]]
        fig.add_trace(go.Scatter(x=days, y=share, mode="lines", name="share met", yaxis="y2"))
    return _layout(
        fig,
        title,
        barmode="stack",
        yaxis_title="cases opened",
        yaxis2={"title": "share met", "overlaying": "y", "side": "right", "range": [0, 1]},
        legend_title=None,
    )


def resolution_lines(monthly: pd.DataFrame, title: str) -> go.Figure:
    """Return p50 and p90 hours per month of a (month, p50_hours, p90_hours) frame."""
    fig = go.Figure()
    for column, name in (("p50_hours", "median"), ("p90_hours", "p90")):
        values = [None if pd.isna(v) else float(v) for v in monthly[column]]
        fig.add_trace(
            go.Scatter(x=list(monthly["month"]), y=values, mode="lines+markers", name=name)
        )
    return _layout(fig, title, yaxis_title="hours to close", legend_title=None)
