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


def daily_lines(volume: pd.DataFrame, title: str) -> go.Figure:
    """Return one line per category of a (day, category, cases) frame, missing days as 0."""
    fig = go.Figure()
    if not volume.empty:
        wide = volume.pivot_table(
            index="day", columns="category", values="cases", aggfunc="sum", fill_value=0
        )
        days = pd.date_range(wide.index.min(), wide.index.max(), freq="D").date
        wide = wide.reindex(days, fill_value=0)
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


def resolution_bars(histogram: pd.DataFrame, title: str) -> go.Figure:
    """Return the resolution-time distribution as bars over the (bin, cases) frame's bins."""
    fig = go.Figure(go.Bar(x=histogram["bin"].tolist(), y=histogram["cases"].tolist()))
    return _layout(fig, title, xaxis_title="time to close", yaxis_title="closed cases")
