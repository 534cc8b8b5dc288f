"""Online recalibration of the 80 % interval from what the warehouse knows at an instant: the
newest closures (at a fixed or adaptive level) or the newest requests, open ones censored."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from sf311.model.columns import INPUT_COLUMNS
from sf311.model.features import MAX_HOURS_DEFAULT, record_features
from sf311.model.scorer import RAW_BIN, Scorer, calibration_groups, interval_bands

ONLINE = "online"
TRAINING = "training"
# Window column: closed before as_of (else open then, its label a lower bound).
CLOSED = "closed_before"
# Recalibration methods: the newest closures, or the newest requests with censoring.
CLOSURES = "closures"
REQUESTS = "requests"
# Columns read from the warehouse `cases` table: the model's inputs and when the case closed.
RECALIBRATION_COLUMNS: tuple[str, ...] = (*INPUT_COLUMNS, "closed_date")


@dataclass(frozen=True)
class OnlineRule:
    """Which cases recalibrate the interval: the newest `window_cases` closures no older than
    `max_age_days` (CLOSURES), or the newest `window_cases` requests at least `min_age_days`
    old (REQUESTS); at least `min_cases` closed among them, else the training calibration."""

    # Defaults chosen on validation blocks of the training period (bench/model_quality.py).
    window_cases: int = 100
    min_cases: int = 30
    max_age_days: float | None = None
    max_hours: float = MAX_HOURS_DEFAULT
    # Central share of the window's residuals the interval spans; None: the model's coverage.
    # 80 % coverage may need a wider share: the newest closures over-represent quick cases.
    level: float | None = 0.8
    # True: only cases requested after the model's training data (out of sample) count.
    out_of_sample: bool = False
    method: str = CLOSURES
    # REQUESTS: requests younger than this are left out (their outcome is mostly unknown).
    min_age_days: float = 0.0
    # Adaptive level (CLOSURES only; gamma 0 is off), see aci_step. Each step is projected into
    # [min, max] so a long easy or hard spell cannot wind the level up past recovery.
    adaptive_gamma: float = 0.01
    adaptive_horizon: int = 200
    adaptive_min_level: float = 0.5
    adaptive_max_level: float = 0.99

    def __post_init__(self) -> None:
        if self.adaptive_gamma > 0 and self.method != CLOSURES:
            raise ValueError(
                "the adaptive level applies to the closures method only: set adaptive_gamma"
                " (SF311_MODEL_ONLINE_ADAPTIVE_GAMMA) to 0 with the requests method"
            )


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
    # Central share of the window spanned (the adaptive one when adaptive), and the outcomes
    # the adaptive level was steered by: revealed before `as_of`, and how many were misses.
    level: float | None = None
    adaptive: AdaptiveLevel | None = None

    def info(self) -> dict[str, Any]:
        """Return what GET /model reports about the calibration in use."""
        return {
            "source": self.source,
            "method": self.method,
            "as_of": self.as_of.isoformat(),
            "n_cases": self.n_cases,
            "n_open": self.n_open,
            "reason": self.reason,
            "level": self.level,
            "adaptive": None if self.adaptive is None else self.adaptive.info(),
            "quantiles": self.calibration["global"],
        }


@dataclass(frozen=True)
class AdaptiveLevel:
    """The adaptive level at an instant and the outcomes it was steered by."""

    level: float
    n_requests: int
    n_revealed: int
    n_missed: int

    def info(self) -> dict[str, Any]:
        """Return the adaptive level's figures as GET /model reports them."""
        return {
            "level": self.level,
            "n_requests": self.n_requests,
            "n_revealed": self.n_revealed,
            "n_missed": self.n_missed,
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
    level = rule.level or training["coverage"]
    if n_closed < rule.min_cases:
        reason = f"{n_closed} of {n} requests closed in the window, fewer than {rule.min_cases}"
        return Recalibration(training, TRAINING, as_of, n, reason, REQUESTS, n_open, level)
    alpha = (1.0 - level) / 2.0
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
        return Recalibration(training, TRAINING, as_of, n, reason, REQUESTS, n_open, level)
    return Recalibration(
        _online_calibration(training, float(low), float(high)),
        ONLINE,
        as_of,
        n,
        method=REQUESTS,
        n_open=n_open,
        level=level,
    )


def closure_recalibration(
    training: dict[str, Any], normalized: np.ndarray, as_of: datetime, rule: OnlineRule
) -> Recalibration:
    """Return the calibration whose ends span the central `rule.level` of a window of closures'
    normalized residuals, or the training calibration when fewer than `rule.min_cases`."""
    n = len(normalized)
    level = rule.level or training["coverage"]
    if n < rule.min_cases:
        reason = f"{n} cases closed in the window, fewer than {rule.min_cases}"
        return Recalibration(training, TRAINING, as_of, n, reason, level=level)
    low, high = interval_quantiles(normalized, level)
    return Recalibration(_online_calibration(training, low, high), ONLINE, as_of, n, level=level)


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
    `rule.method` (at the adaptive level when `rule.adaptive_gamma`), or the scorer's training
    calibration when too little is known.

    `cases` holds silver-shaped records (requested_datetime, closed_date and the feature
    columns); a closure at or after `as_of` is never used, so a later closure never leaks."""
    training = scorer.calibration
    if rule.method == REQUESTS:
        window = known_requested(cases, as_of, rule, not_before)
        closed = window[CLOSED].to_numpy()
        return censored_recalibration(training, _normalized(scorer, window), closed, as_of, rule)
    adaptive = None
    if rule.adaptive_gamma > 0:
        at = np.array([_utc(as_of).timestamp()])
        adaptive = adaptive_levels(scorer, cases, at, rule, not_before)[0]
        rule = replace(rule, level=adaptive.level)
    window = known_closed(cases, as_of, rule, not_before)
    recal = closure_recalibration(training, _normalized(scorer, window), as_of, rule)
    return replace(recal, adaptive=adaptive)


def sorted_quantile(values: Sequence[float], p: float) -> float:
    """Return the p-quantile of ascending `values` exactly as np.quantile's default (linear)
    method computes it, in plain Python: the adaptive replay asks for thousands of them."""
    n = len(values)
    virtual = (n - 1) * p
    below = math.floor(virtual)
    if below >= n - 1:
        return float(values[-1])
    if below < 0:
        return float(values[0])
    a, b = values[below], values[below + 1]
    t = virtual - below
    # np.quantile's lerp, which interpolates from the nearer neighbour.
    return float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t)


def aci_step(level: float, missed: bool, target: float, rule: OnlineRule) -> float:
    """Return the level after one revealed outcome: Adaptive Conformal Inference's (Gibbs &
    Candes 2021) alpha + gamma (alpha_target - err) on the miss rate alpha = 1 - level,
    projected into the rule's level range."""
    moved = level + rule.adaptive_gamma * (float(missed) - (1.0 - target))
    return min(max(moved, rule.adaptive_min_level), rule.adaptive_max_level)


def _eligible_closures(
    scorer: Scorer, cases: pd.DataFrame, rule: OnlineRule, not_before: datetime | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the closure instants (epoch seconds, ascending) of every case a CLOSURES window
    may ever hold, and their normalized residuals, each case scored once."""
    end = pd.to_datetime(cases["closed_date"], utc=True).max()
    everything = replace(rule, window_cases=len(cases), max_age_days=None)
    eligible = (
        known_closed(cases, end + timedelta(seconds=1), everything, not_before).iloc[::-1]
        if pd.notna(end)
        else cases.iloc[:0]
    )
    return _seconds(eligible["closed_date"]), _normalized(scorer, eligible)


def closure_bounds(closed: np.ndarray, at: float, rule: OnlineRule) -> tuple[int, int]:
    """Return the [start, stop) positions, among ascending closure instants, of the newest
    `rule.window_cases` closures before `at` no older than `rule.max_age_days`."""
    stop = int(np.searchsorted(closed, at, side="left"))
    start = max(0, stop - rule.window_cases)
    if rule.max_age_days is not None:
        oldest = at - rule.max_age_days * 86400.0
        start = max(start, int(np.searchsorted(closed, oldest, side="left")))
    return start, stop


@dataclass(frozen=True)
class _Served:
    """What the interval served to each of a run of requests depends on, its level aside."""

    opened: list[float]
    closed: list[float]
    label: list[float]
    raw: list[float]
    # Multiplies the window's quantiles: the predicted scale of a scaled calibration, else 1.
    mult: list[float]
    center: list[float]
    # The request's window of normalized residuals, ascending; None: too few, training ends.
    window: list[list[float] | None]
    training: list[tuple[float, float]]

    def ends(self, j: int, level: float) -> tuple[float, float]:
        """Return the (low, high) log ends served to request j at `level`, as interval_bands
        computes them under the online calibration of closure_recalibration."""
        window = self.window[j]
        if window is None:
            return self.training[j]
        alpha = (1.0 - level) / 2.0
        low_q, high_q = sorted_quantile(window, alpha), sorted_quantile(window, 1.0 - alpha)
        raw, mult, center = self.raw[j], self.mult[j], self.center[j]
        low = max(raw + min(low_q, center) * mult, 0.0)
        return low, max(raw + max(high_q, center) * mult, low)


def _served(
    scorer: Scorer,
    requests: pd.DataFrame,
    closures: tuple[np.ndarray, np.ndarray],
    rule: OnlineRule,
) -> _Served:
    """Return the served-interval inputs of `requests` (usable_requests rows), each window cut
    from `closures` (_eligible_closures) at its request instant."""
    cal = scorer.calibration
    rows = [record_features(r) for r in _records(requests)]
    raw, scale = scorer.raw_and_scale(rows)
    column = cal["group_column"]
    keys = [None] * len(rows) if column == RAW_BIN else [row[column] for row in rows]
    groups = calibration_groups(raw, keys, cal)
    training = interval_bands(raw, keys, cal, scale)
    opened, closed = _seconds(requests["requested_datetime"]), _seconds(requests["closed_date"])
    closed_at, normalized = closures
    windows: list[list[float] | None] = []
    cache: dict[tuple[int, int], list[float] | None] = {}
    for t in opened:
        bounds = closure_bounds(closed_at, t, rule)
        if bounds not in cache:
            start, stop = bounds
            enough = stop - start >= rule.min_cases
            cache[bounds] = np.sort(normalized[start:stop]).tolist() if enough else None
        windows.append(cache[bounds])
    mult = scale if cal.get("scaled") and scale is not None else np.ones(len(rows))
    return _Served(
        opened=opened.tolist(),
        closed=closed.tolist(),
        label=np.log1p((closed - opened) / 3600.0).tolist(),
        raw=raw.tolist(),
        mult=np.asarray(mult, dtype=np.float64).tolist(),
        center=[float(cal["groups"].get(g, cal["global"])[1]) for g in groups],
        window=windows,
        training=[(float(lo), float(hi)) for lo, _, hi in training],
    )


def _replay_level(
    served: _Served, start: int, stop: int, at: float, target: float, rule: OnlineRule
) -> AdaptiveLevel:
    """Return the adaptive level at `at` replayed over requests [start, stop) of `served`
    from the nominal level: each gets the interval of the level then, and its outcome moves the
    level once revealed (at its closure, or, still open past the upper end, then as a miss)."""
    level = rule.level if rule.level is not None else target
    # (instant the outcome is known, request, missed), soonest known first.
    pending: list[tuple[float, int, bool]] = []
    revealed = missed = 0

    def reveal_before(instant: float) -> None:
        nonlocal level, revealed, missed
        while pending and pending[0][0] < instant:
            miss = heapq.heappop(pending)[2]
            level = aci_step(level, miss, target, rule)
            revealed, missed = revealed + 1, missed + miss

    for j in range(start, stop):
        opened = served.opened[j]
        reveal_before(opened)
        low, high = served.ends(j, level)
        label = served.label[j]
        if label <= high:
            heapq.heappush(pending, (served.closed[j], j, label < low))
        else:
            # Open past the upper end: a miss from that instant, whenever it closes.
            heapq.heappush(pending, (opened + math.expm1(high) * 3600.0, j, True))
    reveal_before(at)
    return AdaptiveLevel(level, stop - start, revealed, missed)


def adaptive_levels(
    scorer: Scorer,
    cases: pd.DataFrame,
    instants: np.ndarray,
    rule: OnlineRule,
    not_before: datetime | None = None,
    closures: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[AdaptiveLevel]:
    """Return the adaptive level at each instant (epoch seconds): replayed from `rule.level`
    over the last `rule.adaptive_horizon` usable requests before it (requested at or after
    `not_before`), using only the outcomes `cases` reveal before that instant. `closures` is
    _eligible_closures of the same arguments when the caller has it already."""
    # Replayed, not carried from call to call: the API, a restarted API and the benchmark agree.
    usable = usable_requests(cases, not_before)
    opened = _seconds(usable["requested_datetime"])
    horizon = replace(rule, window_cases=rule.adaptive_horizon, min_age_days=0.0)
    bounds = [request_bounds(opened, float(at), horizon) for at in instants]
    first = min((b[0] for b in bounds), default=0)
    last = max((b[1] for b in bounds), default=0)
    if closures is None:
        closures = _eligible_closures(scorer, cases, rule, not_before)
    served = _served(scorer, usable.iloc[first:last], closures, rule)
    target = float(scorer.calibration["coverage"])
    return [
        _replay_level(served, start - first, stop - first, float(at), target, rule)
        for at, (start, stop) in zip(instants, bounds, strict=True)
    ]


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


def _fetch(
    cur: psycopg.Cursor, template: str, params: dict[str, Any], columns: Sequence[str]
) -> pd.DataFrame:
    query = sql.SQL(template).format(columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    cur.execute(query, params)
    return pd.DataFrame(cur.fetchall(), columns=list(columns))


def _closures_params(as_of: datetime, rule: OnlineRule, oldest_from: datetime) -> dict[str, Any]:
    oldest = oldest_from - timedelta(days=rule.max_age_days) if rule.max_age_days else _EPOCH
    return {"as_of": as_of, "oldest": oldest, "max_hours": rule.max_hours}


def _adaptive_cases(
    cur: psycopg.Cursor, as_of: datetime, rule: OnlineRule, since: datetime
) -> pd.DataFrame:
    """Return what the adaptive level at `as_of` replays from: the last `adaptive_horizon`
    requests, every closure since the oldest of them, and the window before it."""
    columns = ("service_request_id", *RECALIBRATION_COLUMNS)
    requests = _fetch(
        cur,
        RECENT_REQUESTED_SQL,
        {
            "newest": as_of,
            "oldest": as_of - timedelta(hours=rule.max_hours),
            "since": since,
            "limit": rule.adaptive_horizon,
        },
        columns,
    )
    first = requests["requested_datetime"].min() if len(requests) else as_of
    # LIMIT NULL is no limit: every closure from the first request on.
    recent = _closures_params(as_of, rule, first) | {"oldest": first, "since": since, "limit": None}
    before = _closures_params(first, rule, first) | {"since": since, "limit": rule.window_cases}
    frames = [requests, *(_fetch(cur, RECENT_CLOSED_SQL, p, columns) for p in (recent, before))]
    # A request of the horizon may also be one of the closures: keep each case once. Empty
    # frames are left out: their all-NA columns would set the dtypes.
    found = [f for f in frames if not f.empty] or [requests]
    return pd.concat(found).drop_duplicates("service_request_id").reset_index(drop=True)


def recent_cases(
    dsn: str, as_of: datetime, rule: OnlineRule, not_before: datetime | None = None
) -> pd.DataFrame:
    """Return the warehouse `cases` rows `rule.method` recalibrates from at `as_of`: the newest
    closures before it (CLOSURES, with what the adaptive level replays when adaptive) or the
    newest requests, open ones included (REQUESTS)."""
    since = not_before or _EPOCH
    with psycopg.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        if rule.adaptive_gamma > 0:
            return _adaptive_cases(cur, as_of, rule, since)
        if rule.method == REQUESTS:
            template = RECENT_REQUESTED_SQL
            params: dict[str, Any] = {
                "newest": as_of - timedelta(days=rule.min_age_days),
                "oldest": as_of - timedelta(hours=rule.max_hours),
            }
        else:
            template = RECENT_CLOSED_SQL
            params = _closures_params(as_of, rule, as_of)
        params |= {"since": since, "limit": rule.window_cases}
        return _fetch(cur, template, params, RECALIBRATION_COLUMNS)


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
    """Return the CLOSURES recalibration in force at each of the ascending `requested`, at the
    adaptive level of each instant when `rule.adaptive_gamma`."""
    # Every case that will ever qualify, oldest closure first, scored once; a request's window
    # is the last `window_cases` of those closed before it (and within max_age_days).
    closures = _eligible_closures(scorer, cases, rule, not_before)
    closed, normalized = closures
    instants = np.array([at.timestamp() for at in requested])
    adaptive: list[AdaptiveLevel | None] = (
        list(adaptive_levels(scorer, cases, instants, rule, not_before, closures))
        if rule.adaptive_gamma > 0
        else [None] * len(instants)
    )
    out: list[Recalibration] = []
    last, recal = None, None
    for at, t, steered in zip(requested, instants, adaptive, strict=True):
        at_rule = rule if steered is None else replace(rule, level=steered.level)
        start, stop = closure_bounds(closed, t, at_rule)
        # The window changes only when a case closes (or ages out): reuse it in between.
        if recal is None or (start, stop, at_rule.level) != last:
            recal = closure_recalibration(
                scorer.calibration, normalized[start:stop], at.to_pydatetime(), at_rule
            )
            last = (start, stop, at_rule.level)
        out.append(replace(recal, adaptive=steered))
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
