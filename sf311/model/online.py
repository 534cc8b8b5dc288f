"""Online recalibration of the 80 % interval from the cases closed before the moment of a request.

The training-time interval is calibrated on the training period; when resolution times drift
(the real data's last half-year is much easier than any before it) it no longer covers 80 %.
Here the interval's residual quantiles are recomputed from the newest closed cases, using only
what is known at `as_of`: a case counts once its closed_date is before `as_of`. The point
prediction stays the model's own, so online recalibration moves only the interval's ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from sf311.model.columns import CATEGORICAL
from sf311.model.features import MAX_HOURS_DEFAULT, record_features
from sf311.model.scorer import Scorer

SCORED = "scored_raw"
SCALE = "scored_scale"
ONLINE = "online"
TRAINING = "training"
# Columns read from the warehouse `cases` table: the features, when opened and when closed.
CASE_COLUMNS: tuple[str, ...] = (
    "requested_datetime",
    "closed_date",
    *CATEGORICAL,
    "lat",
    "long",
)


@dataclass(frozen=True)
class OnlineRule:
    """Which closed cases recalibrate the interval: the newest `window_cases` closures no older
    than `max_age_days`, at least `min_cases` of them, else the training calibration stays."""

    # Defaults chosen on 3 validation blocks of the training period (bench/model_quality.py):
    # 100 closures, cases the model was fit on allowed, 85 % of their residuals spanned.
    window_cases: int = 100
    min_cases: int = 30
    max_age_days: float | None = None
    max_hours: float = MAX_HOURS_DEFAULT
    # Central share of the window's residuals the interval spans; None: the model's coverage.
    # In-sample residuals are small and the newest closures over-represent quick cases (long
    # ones have not closed yet), so 80 % coverage needs a wider share; validation decides.
    level: float | None = 0.85
    # True: only cases requested after the model's training data (out of sample) count.
    out_of_sample: bool = False


@dataclass(frozen=True)
class Recalibration:
    """A calibration for interval_bands and where it came from (online or training)."""

    calibration: dict[str, Any]
    source: str
    as_of: datetime
    n_cases: int
    reason: str = ""

    def info(self) -> dict[str, Any]:
        """Return what GET /model reports about the calibration in use."""
        return {
            "source": self.source,
            "as_of": self.as_of.isoformat(),
            "n_cases": self.n_cases,
            "reason": self.reason,
            "quantiles": self.calibration["global"],
        }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return the rows of a frame as dicts with every missing value (NaN, NA, NaT) as None."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _utc(value: datetime) -> pd.Timestamp:
    at = pd.Timestamp(value)
    return at.tz_localize(UTC) if at.tzinfo is None else at.tz_convert(UTC)


def known_closed(
    cases: pd.DataFrame, as_of: datetime, rule: OnlineRule, not_before: datetime | None = None
) -> pd.DataFrame:
    """Return the recalibration window: usable cases closed before `as_of`, newest closures
    first, at most `rule.window_cases`, requested at or after `not_before` when given.

    `not_before` is the end of the model's training data: older cases were fit by the model,
    and their in-sample residuals would make the interval too narrow."""
    at = _utc(as_of)
    # Positions, not labels: a frame concatenated from several sources may repeat labels.
    cases = cases.reset_index(drop=True)
    requested = pd.to_datetime(cases["requested_datetime"], utc=True)
    closed = pd.to_datetime(cases["closed_date"], utc=True)
    hours = (closed - requested).dt.total_seconds() / 3600
    keep = closed.notna() & (closed < at) & (hours >= 0) & (hours < rule.max_hours)
    if not_before is not None:
        keep &= requested >= _utc(not_before)
    if rule.max_age_days is not None:
        keep &= closed >= at - timedelta(days=rule.max_age_days)
    newest = closed[keep].sort_values(ascending=False, kind="stable").index[: rule.window_cases]
    return cases.loc[newest].assign(label=np.log1p(hours.loc[newest]))


def interval_quantiles(residuals: np.ndarray, coverage: float) -> tuple[float, float]:
    """Return (low, high): the residual quantiles bounding a central `coverage` interval."""
    alpha = (1.0 - coverage) / 2.0
    low, high = np.quantile(residuals, [alpha, 1.0 - alpha])
    return float(low), float(high)


def recalibrate(
    scorer: Scorer,
    cases: pd.DataFrame,
    as_of: datetime,
    rule: OnlineRule,
    not_before: datetime | None = None,
) -> Recalibration:
    """Return the interval calibration recomputed from the cases closed before `as_of`, or
    the scorer's training calibration when fewer than `rule.min_cases` qualify.

    `cases` holds silver-shaped records (requested_datetime, closed_date and the feature
    columns); anything not closed before `as_of` is ignored, so a later closure never leaks.
    Columns `SCORED` (and `SCALE`) may carry the scorer's own raw output (and predicted
    |residual|) for these cases, computed once when the same cases recalibrate many times."""
    training = scorer.calibration
    window = known_closed(cases, as_of, rule, not_before)
    if len(window) < rule.min_cases:
        reason = f"{len(window)} cases closed in the window, fewer than {rule.min_cases}"
        return Recalibration(training, TRAINING, as_of, len(window), reason)
    if SCORED in window:
        raw, scale = window[SCORED].to_numpy(), window.get(SCALE)
    else:
        raw, scale = scorer.raw_and_scale([record_features(r) for r in _records(window)])
    resid = window["label"].to_numpy() - raw
    normalized = resid / np.asarray(scale) if scale is not None else resid
    low, high = interval_quantiles(normalized, rule.level or training["coverage"])

    # One pair of ends for all groups (a window of a few hundred is too small to split), while
    # each group keeps its training centre, so the point prediction never moves.
    # Under a sharp drift the window may sit wholly on one side of a centre: the interval
    # still contains its own point.
    def ends(center: float) -> list[float]:
        return [min(low, center), center, max(high, center)]

    online = {
        **training,
        "global": ends(training["global"][1]),
        "groups": {g: ends(q[1]) for g, q in training["groups"].items()},
    }
    return Recalibration(online, ONLINE, as_of, len(window))


RECENT_CLOSED_SQL = """
SELECT {columns} FROM cases
WHERE closed_date < %(as_of)s AND closed_date >= %(oldest)s AND requested_datetime >= %(since)s
  AND closed_date >= requested_datetime
  AND closed_date < requested_datetime + %(max_hours)s * interval '1 hour'
ORDER BY closed_date DESC
LIMIT %(limit)s
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def recent_closed_cases(
    dsn: str, as_of: datetime, rule: OnlineRule, not_before: datetime | None = None
) -> pd.DataFrame:
    """Return the newest closures before `as_of` from the warehouse `cases` table."""
    query = sql.SQL(RECENT_CLOSED_SQL).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in CASE_COLUMNS)
    )
    params = {
        "as_of": as_of,
        "oldest": as_of - timedelta(days=rule.max_age_days) if rule.max_age_days else _EPOCH,
        "since": not_before or _EPOCH,
        "max_hours": rule.max_hours,
        "limit": rule.window_cases,
    }
    with psycopg.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    return pd.DataFrame(rows, columns=list(CASE_COLUMNS))


def data_end(scorer: Scorer) -> datetime | None:
    """Return the end of the model's training data recorded at export, if any."""
    end = scorer.spec.get("data_end")
    if not end:
        return None
    # Spark hands back naive instants in its session time zone, UTC.
    at = datetime.fromisoformat(end)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def recalibrate_from_warehouse(
    scorer: Scorer, dsn: str, as_of: datetime, rule: OnlineRule
) -> Recalibration:
    """Return the calibration recomputed from the warehouse's newest closed cases, or the
    training calibration when the warehouse cannot be read (prediction never depends on it)."""
    not_before = data_end(scorer) if rule.out_of_sample else None
    try:
        cases = recent_closed_cases(dsn, as_of, rule, not_before)
    except psycopg.Error as err:
        reason = f"warehouse not readable: {type(err).__name__}: {str(err).strip()[:200]}"
        return Recalibration(scorer.calibration, TRAINING, as_of, 0, reason)
    return recalibrate(scorer, cases, as_of, rule, not_before)


def replay(
    scorer: Scorer,
    cases: pd.DataFrame,
    requests: pd.DataFrame,
    rule: OnlineRule,
    not_before: datetime | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return, per request, the (low, point, high) log bands served under online recalibration
    at its requested_datetime, and whether that calibration was online (True) or training.

    This replays the API over time: each request sees only the cases of `cases` closed before
    it was made, exactly what a recalibration run at that instant could have read."""
    requested = pd.to_datetime(requests["requested_datetime"], utc=True)
    # Every case that will ever qualify, oldest closure first, scored once; a request's window
    # lies among the last `window_cases` of those closed before it, so only they are passed.
    end = pd.to_datetime(cases["closed_date"], utc=True).max()
    everything = replace(rule, window_cases=len(cases), max_age_days=None)
    eligible = (
        known_closed(cases, end + timedelta(seconds=1), everything, not_before).iloc[::-1]
        if pd.notna(end)
        else cases.iloc[:0]
    )
    raw, scale = scorer.raw_and_scale([record_features(r) for r in _records(eligible)])
    eligible = eligible.assign(**{SCORED: raw}, **({} if scale is None else {SCALE: scale}))
    closed = pd.to_datetime(eligible["closed_date"], utc=True)
    rows = [record_features(r) for r in _records(requests)]
    bands = np.empty((len(requests), 3))
    online = np.zeros(len(requests), dtype=bool)
    last_known, recal = -1, None
    for i, at in enumerate(requested):
        # The window changes only when a case closes: reuse it between closures.
        known = int(closed.searchsorted(at, side="left"))
        if recal is None or known != last_known:
            recent = eligible.iloc[max(0, known - rule.window_cases) : known]
            recal = recalibrate(scorer, recent, at.to_pydatetime(), rule, not_before)
            last_known = known
        pred = scorer.predict_features(rows[i : i + 1], recal.calibration)
        bands[i] = pred.log_lower[0], pred.log_hours[0], pred.log_upper[0]
        online[i] = recal.source == ONLINE
    return bands, online
