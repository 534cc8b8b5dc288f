"""Online recalibration of the 80 % interval from what the warehouse knows at the moment.

The training-time interval is calibrated on the training period; when resolution times drift
(the real data's last half-year is much easier than any before it) it no longer covers 80 %.
Here the interval's residual quantiles are recomputed from recent cases, using only what is
known at `as_of`: a case is closed once its closed_date is before `as_of`, else still open.
Two methods: CLOSURES spans a share of the newest closures' residuals (biased toward quick cases,
since long ones have not closed yet); REQUESTS takes the newest requests, closed or still open,
and estimates the residual distribution with right-censoring (Kaplan-Meier): a case still open
is known only to resolve later than its elapsed time. The point prediction stays the model's
own, so online recalibration moves only the interval's ends.
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

ONLINE = "online"
TRAINING = "training"
# Window column: closed before as_of (else open then, its label a lower bound).
CLOSED = "closed_before"
# Recalibration methods: the newest closures, or the newest requests with censoring.
CLOSURES = "closures"
REQUESTS = "requests"
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
    """Which cases recalibrate the interval: the newest `window_cases` closures no older than
    `max_age_days` (CLOSURES), or the newest `window_cases` requests at least `min_age_days`
    old (REQUESTS); at least `min_cases` closed among them, else the training calibration."""

    # Defaults chosen on 3 validation blocks of the training period (bench/model_quality.py):
    # 100 closures, cases the model was fit on allowed, 85 % of their residuals spanned. The
    # censored REQUESTS windows came no closer to 80 % there and were wider (they lag a drift).
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
    method: str = CLOSURES
    # REQUESTS: requests younger than this are left out (their outcome is mostly unknown).
    min_age_days: float = 0.0


@dataclass(frozen=True)
class Recalibration:
    """A calibration for interval_bands and where it came from (online or training)."""

    calibration: dict[str, Any]
    source: str
    as_of: datetime
    n_cases: int
    reason: str = ""
    method: str = CLOSURES
    # REQUESTS: how many cases of the window were still open at `as_of` (censored).
    n_open: int = 0

    def info(self) -> dict[str, Any]:
        """Return what GET /model reports about the calibration in use."""
        return {
            "source": self.source,
            "method": self.method,
            "as_of": self.as_of.isoformat(),
            "n_cases": self.n_cases,
            "n_open": self.n_open,
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


def _seconds(values: pd.Series) -> np.ndarray:
    """Return instants as epoch seconds, a missing one (never closed) as +inf."""
    at = pd.to_datetime(values, utc=True)
    return ((at - pd.Timestamp(0, tz=UTC)).dt.total_seconds()).fillna(np.inf).to_numpy()


def request_bounds(requested: np.ndarray, at: float, rule: OnlineRule) -> tuple[int, int]:
    """Return the [start, stop) positions, among ascending request instants (epoch seconds),
    of the newest `rule.window_cases` requests made `rule.min_age_days` or more before `at`
    and less than `rule.max_hours` before it (older ones are absurd or never close)."""
    stop = int(np.searchsorted(requested, at - rule.min_age_days * 86400.0, side="left"))
    oldest = int(np.searchsorted(requested, at - rule.max_hours * 3600.0, side="right"))
    return min(max(oldest, stop - rule.window_cases), stop), stop


def censored_labels(
    requested: np.ndarray, closed: np.ndarray, at: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return per case log1p(hours) to its closure when closed before `at`, else log1p of its
    hours open at `at` (a lower bound: right-censored), and whether it had closed.

    A closure at or after `at` is not known at `at`: such a case counts as open, never leaks."""
    known = closed < at
    return np.log1p((np.where(known, closed, at) - requested) / 3600.0), known


def usable_requests(cases: pd.DataFrame, not_before: datetime | None = None) -> pd.DataFrame:
    """Return the cases a censored window may hold, ascending by request (positions reset):
    not closed before they were opened, requested at or after `not_before` when given."""
    requested = pd.to_datetime(cases["requested_datetime"], utc=True)
    closed = pd.to_datetime(cases["closed_date"], utc=True)
    keep = (closed.isna() | (closed >= requested)).to_numpy()
    if not_before is not None:
        keep &= (requested >= _utc(not_before)).to_numpy()
    order = np.argsort(_seconds(requested)[keep], kind="stable")
    return cases.loc[keep].iloc[order].reset_index(drop=True)


def known_requested(
    cases: pd.DataFrame, as_of: datetime, rule: OnlineRule, not_before: datetime | None = None
) -> pd.DataFrame:
    """Return the censored recalibration window: the newest usable requests of request_bounds,
    oldest first, each with `label` from censored_labels and `CLOSED` (closed before `as_of`).

    Open cases (closed_date missing or not before `as_of`) stay in, with what is known of them
    at `as_of`."""
    usable = usable_requests(cases, not_before)
    at = _utc(as_of).timestamp()
    start, stop = request_bounds(_seconds(usable["requested_datetime"]), at, rule)
    window = usable.iloc[start:stop]
    label, known = censored_labels(
        _seconds(window["requested_datetime"]), _seconds(window["closed_date"]), at
    )
    return window.assign(label=label, **{CLOSED: known})


def km_quantiles(values: np.ndarray, closed: np.ndarray, probs: list[float]) -> np.ndarray:
    """Return the Kaplan-Meier quantiles of right-censored values: per p the least closed value
    whose estimated CDF reaches p, NaN when the estimate never does (too much still open).

    `closed` False marks a value known only as a lower bound. At equal values closures come
    first, the usual convention: a case open at v is at risk of closing at v."""
    closed = np.asarray(closed, dtype=bool)
    order = np.lexsort((~closed, values))
    v, e = np.asarray(values, dtype=np.float64)[order], closed[order]
    at_risk = len(v) - np.arange(len(v))
    cdf = 1.0 - np.cumprod(np.where(e, 1.0 - 1.0 / at_risk, 1.0))
    out = np.full(len(probs), np.nan)
    for j, p in enumerate(probs):
        # The tolerance keeps k/n == p exact where floating point lands a hair below.
        hit = np.flatnonzero(e & (cdf >= p - 1e-12))
        if hit.size:
            out[j] = v[hit[0]]
    return out


def interval_quantiles(residuals: np.ndarray, coverage: float) -> tuple[float, float]:
    """Return (low, high): the residual quantiles bounding a central `coverage` interval."""
    alpha = (1.0 - coverage) / 2.0
    low, high = np.quantile(residuals, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _online_calibration(training: dict[str, Any], low: float, high: float) -> dict[str, Any]:
    """Return the training calibration with the ends `low` and `high` around every centre."""

    # One pair of ends for all groups (a window of a few hundred is too small to split), while
    # each group keeps its training centre, so the point prediction never moves.
    # Under a sharp drift the window may sit wholly on one side of a centre: the interval
    # still contains its own point.
    def ends(center: float) -> list[float]:
        return [min(low, center), center, max(high, center)]

    return {
        **training,
        "global": ends(training["global"][1]),
        "groups": {g: ends(q[1]) for g, q in training["groups"].items()},
    }


def censored_recalibration(
    training: dict[str, Any],
    normalized: np.ndarray,
    closed: np.ndarray,
    as_of: datetime,
    rule: OnlineRule,
) -> Recalibration:
    """Return the calibration whose ends are the Kaplan-Meier quantiles of a window's
    normalized residuals (those of open cases right-censored), or the training calibration
    when fewer than `rule.min_cases` closed or the estimate never reaches a quantile."""
    n, n_closed = len(closed), int(np.sum(closed))
    n_open = n - n_closed
    if n_closed < rule.min_cases:
        reason = f"{n_closed} of {n} requests closed in the window, fewer than {rule.min_cases}"
        return Recalibration(training, TRAINING, as_of, n, reason, REQUESTS, n_open)
    alpha = (1.0 - (rule.level or training["coverage"])) / 2.0
    low, high = km_quantiles(normalized, closed, [alpha, 1.0 - alpha])
    if np.isnan(low) or np.isnan(high):
        # An open case beyond the last closure is a miss we cannot place: the window does not
        # identify the quantile, and the training ends are the better guess.
        beyond = int(np.sum(~closed & (normalized > np.max(normalized[closed]))))
        missing = 1.0 - alpha if np.isnan(high) else alpha
        reason = (
            f"Kaplan-Meier never reaches the {missing:.1%} quantile: {beyond} of {n} cases "
            "still open past the last closure; training calibration kept"
        )
        return Recalibration(training, TRAINING, as_of, n, reason, REQUESTS, n_open)
    return Recalibration(
        _online_calibration(training, float(low), float(high)),
        ONLINE,
        as_of,
        n,
        method=REQUESTS,
        n_open=n_open,
    )


def closure_recalibration(
    training: dict[str, Any], normalized: np.ndarray, as_of: datetime, rule: OnlineRule
) -> Recalibration:
    """Return the calibration whose ends span the central `rule.level` of a window of closures'
    normalized residuals, or the training calibration when fewer than `rule.min_cases`."""
    n = len(normalized)
    if n < rule.min_cases:
        reason = f"{n} cases closed in the window, fewer than {rule.min_cases}"
        return Recalibration(training, TRAINING, as_of, n, reason)
    low, high = interval_quantiles(normalized, rule.level or training["coverage"])
    return Recalibration(_online_calibration(training, low, high), ONLINE, as_of, n)


def _normalized(scorer: Scorer, window: pd.DataFrame) -> np.ndarray:
    """Return the window's residuals (label - raw) over the predicted scale, if any."""
    if window.empty:
        return np.empty(0)
    raw, scale = scorer.raw_and_scale([record_features(r) for r in _records(window)])
    resid = window["label"].to_numpy() - raw
    return resid / np.asarray(scale) if scale is not None else resid


def recalibrate(
    scorer: Scorer,
    cases: pd.DataFrame,
    as_of: datetime,
    rule: OnlineRule,
    not_before: datetime | None = None,
) -> Recalibration:
    """Return the interval calibration recomputed from what `cases` tell at `as_of` under
    `rule.method`, or the scorer's training calibration when too little is known.

    `cases` holds silver-shaped records (requested_datetime, closed_date and the feature
    columns); a closure at or after `as_of` is never used, so a later closure never leaks."""
    training = scorer.calibration
    if rule.method == REQUESTS:
        window = known_requested(cases, as_of, rule, not_before)
        closed = window[CLOSED].to_numpy()
        return censored_recalibration(training, _normalized(scorer, window), closed, as_of, rule)
    window = known_closed(cases, as_of, rule, not_before)
    return closure_recalibration(training, _normalized(scorer, window), as_of, rule)


RECENT_CLOSED_SQL = """
SELECT {columns} FROM cases
WHERE closed_date < %(as_of)s AND closed_date >= %(oldest)s AND requested_datetime >= %(since)s
  AND closed_date >= requested_datetime
  AND closed_date < requested_datetime + %(max_hours)s * interval '1 hour'
ORDER BY closed_date DESC
LIMIT %(limit)s
"""
# The newest requests, open ones included (closed_date NULL, or a closure not yet known at
# as_of: known_requested treats it as open). Same window as request_bounds.
RECENT_REQUESTED_SQL = """
SELECT {columns} FROM cases
WHERE requested_datetime < %(newest)s AND requested_datetime > %(oldest)s
  AND requested_datetime >= %(since)s
  AND (closed_date IS NULL OR closed_date >= requested_datetime)
ORDER BY requested_datetime DESC
LIMIT %(limit)s
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def recent_cases(
    dsn: str, as_of: datetime, rule: OnlineRule, not_before: datetime | None = None
) -> pd.DataFrame:
    """Return the warehouse `cases` rows `rule.method` recalibrates from at `as_of`: the newest
    closures before it (CLOSURES) or the newest requests, open ones included (REQUESTS)."""
    if rule.method == REQUESTS:
        template = RECENT_REQUESTED_SQL
        params: dict[str, Any] = {
            "newest": as_of - timedelta(days=rule.min_age_days),
            "oldest": as_of - timedelta(hours=rule.max_hours),
        }
    else:
        template = RECENT_CLOSED_SQL
        params = {
            "as_of": as_of,
            "oldest": as_of - timedelta(days=rule.max_age_days) if rule.max_age_days else _EPOCH,
            "max_hours": rule.max_hours,
        }
    query = sql.SQL(template).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in CASE_COLUMNS)
    )
    params |= {"since": not_before or _EPOCH, "limit": rule.window_cases}
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
    """Return the calibration recomputed from the warehouse's recent cases, or the training
    calibration when the warehouse cannot be read (prediction never depends on it)."""
    not_before = data_end(scorer) if rule.out_of_sample else None
    try:
        cases = recent_cases(dsn, as_of, rule, not_before)
    except psycopg.Error as err:
        reason = f"warehouse not readable: {type(err).__name__}: {str(err).strip()[:200]}"
        return Recalibration(scorer.calibration, TRAINING, as_of, 0, reason, rule.method)
    return recalibrate(scorer, cases, as_of, rule, not_before)


def _replay_closures(
    scorer: Scorer,
    cases: pd.DataFrame,
    requested: pd.Series,
    rule: OnlineRule,
    not_before: datetime | None,
) -> list[Recalibration]:
    """Return the CLOSURES recalibration in force at each of the ascending `requested`."""
    # Every case that will ever qualify, oldest closure first, scored once; a request's window
    # is the last `window_cases` of those closed before it (and within max_age_days).
    end = pd.to_datetime(cases["closed_date"], utc=True).max()
    everything = replace(rule, window_cases=len(cases), max_age_days=None)
    eligible = (
        known_closed(cases, end + timedelta(seconds=1), everything, not_before).iloc[::-1]
        if pd.notna(end)
        else cases.iloc[:0]
    )
    normalized, closed = _normalized(scorer, eligible), _seconds(eligible["closed_date"])
    out: list[Recalibration] = []
    last, recal = (-1, -1), None
    for at in requested:
        t = at.timestamp()
        stop = int(np.searchsorted(closed, t, side="left"))
        start = max(0, stop - rule.window_cases)
        if rule.max_age_days is not None:
            oldest = t - rule.max_age_days * 86400.0
            start = max(start, int(np.searchsorted(closed, oldest, side="left")))
        # The window changes only when a case closes (or ages out): reuse it in between.
        if recal is None or (start, stop) != last:
            recal = closure_recalibration(
                scorer.calibration, normalized[start:stop], at.to_pydatetime(), rule
            )
            last = (start, stop)
        out.append(recal)
    return out


def _replay_requests(
    scorer: Scorer, usable: pd.DataFrame, requested: pd.Series, rule: OnlineRule
) -> list[Recalibration]:
    """Return the REQUESTS recalibration in force at each of the ascending `requested`, from
    the cases of usable_requests."""
    # Every usable case scored once; each instant's window is then a slice of the arrays,
    # the one known_requested cuts from a frame.
    raw, scale = scorer.raw_and_scale([record_features(r) for r in _records(usable)])
    opened, closed = _seconds(usable["requested_datetime"]), _seconds(usable["closed_date"])
    out = []
    for at in requested:
        start, stop = request_bounds(opened, at.timestamp(), rule)
        label, known = censored_labels(opened[start:stop], closed[start:stop], at.timestamp())
        resid = label - raw[start:stop]
        normalized = resid / scale[start:stop] if scale is not None else resid
        out.append(
            censored_recalibration(scorer.calibration, normalized, known, at.to_pydatetime(), rule)
        )
    return out


def replay(
    scorer: Scorer,
    cases: pd.DataFrame,
    requests: pd.DataFrame,
    rule: OnlineRule,
    not_before: datetime | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return, per request, the (low, point, high) log bands served under online recalibration
    at its requested_datetime, and whether that calibration was online (True) or training.

    This replays the API over time: each request sees only what `cases` told before it was
    made (closures before it; later ones count as still open), what a recalibration run at
    that instant could have read."""
    requested = pd.to_datetime(requests["requested_datetime"], utc=True)
    if rule.method == REQUESTS:
        recals = _replay_requests(scorer, usable_requests(cases, not_before), requested, rule)
    else:
        recals = _replay_closures(scorer, cases, requested, rule, not_before)
    rows = [record_features(r) for r in _records(requests)]
    bands = np.empty((len(requests), 3))
    for i, recal in enumerate(recals):
        pred = scorer.predict_features(rows[i : i + 1], recal.calibration)
        bands[i] = pred.log_lower[0], pred.log_hours[0], pred.log_upper[0]
    return bands, np.array([r.source == ONLINE for r in recals], dtype=bool)
