"""The generator's calibration: aggregates of real case files (mixes, effects, quantiles), no rows.

Resolution time is fit as log1p(hours) = global + category + subtype within its category + agency
+ source + hour of day + weekday + month + a residual drawn from its category's quantiles; each
effect is a mean shrunk toward its parent by `_PRIOR` pseudo-cases (backfitting), so that a
rare level behaves like its parent. The regression cases follow the model's label rule (closed,
0 <= hours < 2 years, not closed as a duplicate, transfer or cancellation).
Run: sf311 calibrate ../shared/data/sf311/cases_10k_2008_2019.csv [more files]
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sf311.contract import quality
from sf311.contract.city import SF_LAT, SF_LONG
from sf311.errors import InputError
from sf311.ingest.files import read_rows
from sf311.ingest.normalize import parse_float, parse_timestamp

CALIBRATION = Path(__file__).with_name("calibration.json")
# The kinds of closure that end a case without resolving it (sf311.contract.quality).
NOT_RESOLUTIONS = (quality.DUPLICATE, quality.TRANSFERRED, quality.CANCELLED_OR_INVALID)
MAX_HOURS = 2 * 365 * 24.0
RESIDUAL_PROBS = tuple(round(0.01 + 0.02 * i, 2) for i in range(50))
_TOP = 12
_MIN_SEEN = 5
# Pseudo-cases of the parent's value in every shrunk mean or share.
_PRIOR = 20.0
_OPEN_PRIOR = 50.0
_MIX_HALF_LIFE_YEARS = 1.0
# A category's own residual quantiles need this many cases; fewer use the global ones.
_MIN_RESIDUALS = 100
_BACKFIT_ROUNDS = 6
_HOUR_MS = 3_600_000


@dataclass
class _Mix:
    """How often each value was seen, and its recency-weighted count."""

    counts: Counter[str] = field(default_factory=Counter)
    weights: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, value: str, weight: float) -> None:
        self.counts[value] += 1
        self.weights[value] += weight

    def top(self, top: int = _TOP) -> list[list[Any]]:
        """Return up to `top` [value, weight] pairs, heaviest first, of values seen often enough."""
        # Values seen fewer than _MIN_SEEN times are free text (plates, names): never copied.
        seen = [(v, w) for v, w in self.weights.items() if v and self.counts[v] >= _MIN_SEEN]
        ranked = sorted(seen, key=lambda item: -item[1])[:top]
        return [[v, round(w, 3)] for v, w in ranked if round(w, 3) > 0]


def _mix(counter: Counter[str], top: int = _TOP) -> list[list[Any]]:
    # Values seen fewer than _MIN_SEEN times are free text (plates, names): never copied.
    return [[name, n] for name, n in counter.most_common(top) if name and n >= _MIN_SEEN]


def _wordings(counter: Counter[str]) -> list[list[Any]]:
    # Closure notes of one kind are rarer: a wording seen twice with no number in it is a form
    # phrase ("Case Transferred"), not a case's own text.
    return [
        [note, n]
        for note, n in counter.most_common(6)
        if n >= 2 and not any(ch.isdigit() for ch in note)
    ]


@dataclass
class _Case:
    """What the duration fit reads of one real case."""

    category: str
    subtype: str
    agency: str
    source: str
    hour: int
    weekday: int
    month: int
    label: float


# Each additive effect: its name and how it keys a case (the subtype nests in its category).
_EFFECTS: tuple[tuple[str, Callable[[_Case], Hashable]], ...] = (
    ("category", lambda c: c.category),
    ("subtype", lambda c: (c.category, c.subtype)),
    ("agency", lambda c: c.agency),
    ("source", lambda c: c.source),
    ("hour", lambda c: c.hour),
    ("weekday", lambda c: c.weekday),
    ("month", lambda c: c.month),
)


def fit_durations(cases: list[_Case]) -> dict[str, Any]:
    """Return the shrunk additive effects on log1p(hours) and residual quantiles by category."""
    if not cases:
        raise InputError("no closed case with a resolution time to calibrate durations on")
    mean = statistics.fmean(c.label for c in cases)
    effects: dict[str, dict[Hashable, float]] = {name: {} for name, _ in _EFFECTS}
    keys = [[key(c) for _, key in _EFFECTS] for c in cases]

    def fitted(i: int, skip: int = -1) -> float:
        return mean + sum(
            effects[name].get(keys[i][j], 0.0) for j, (name, _) in enumerate(_EFFECTS) if j != skip
        )

    for _ in range(_BACKFIT_ROUNDS):
        for j, (name, _) in enumerate(_EFFECTS):
            sums: dict[Hashable, float] = defaultdict(float)
            counts: Counter[Hashable] = Counter()
            for i, case in enumerate(cases):
                sums[keys[i][j]] += case.label - fitted(i, skip=j)
                counts[keys[i][j]] += 1
            effects[name] = {k: sums[k] / (counts[k] + _PRIOR) for k in sums}
    residuals: dict[str, list[float]] = defaultdict(list)
    for i, case in enumerate(cases):
        residuals[case.category].append(case.label - fitted(i))
    everyone = [r for values in residuals.values() for r in values]
    subtypes: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in effects.pop("subtype").items():
        cat, sub = cast(tuple[str, str], key)
        subtypes[cat][sub] = round(value, 4)
    return {
        "mean": round(mean, 4),
        **{
            name: {str(k): round(v, 4) for k, v in table.items()} for name, table in effects.items()
        },
        "subtype": dict(subtypes),
        "residual_probs": list(RESIDUAL_PROBS),
        "residuals": {
            "global": _quantiles(everyone),
            **{
                cat: _quantiles(values)
                for cat, values in residuals.items()
                if len(values) >= _MIN_RESIDUALS
            },
        },
        "r2_in_sample": round(1 - statistics.fmean(r * r for r in everyone) / _variance(cases), 4),
    }


def _variance(cases: list[_Case]) -> float:
    return statistics.pvariance([c.label for c in cases])


def _quantiles(values: list[float]) -> list[float]:
    values = sorted(values)
    last = len(values) - 1
    out = []
    for p in RESIDUAL_PROBS:
        at = p * last
        low = int(at)
        high = min(low + 1, last)
        out.append(round(values[low] + (at - low) * (values[high] - values[low]), 4))
    return out


def _shrunk_shares(
    hits: dict[str, Counter[str]], totals: Counter[str], kinds: Iterable[str], prior: float
) -> dict[str, Any]:
    """Return each kind's global share and per-key shares shrunk toward it."""
    total = sum(totals.values())
    overall = {k: sum(h[k] for h in hits.values()) / max(total, 1) for k in kinds}
    return {
        "global": {k: round(v, 5) for k, v in overall.items()},
        **{
            key: {k: round((hits[key][k] + prior * overall[k]) / (n + prior), 5) for k in overall}
            for key, n in totals.items()
            if key
        },
    }


@dataclass
class _Tally:
    """Running counts of one pass over real files."""

    categories: _Mix = field(default_factory=_Mix)
    subtypes: dict[str, _Mix] = field(default_factory=lambda: defaultdict(_Mix))
    details: dict[tuple[str, str], _Mix] = field(default_factory=lambda: defaultdict(_Mix))
    agencies: dict[str, _Mix] = field(default_factory=lambda: defaultdict(_Mix))
    subtype_agencies: dict[tuple[str, str], _Mix] = field(default_factory=lambda: defaultdict(_Mix))
    sources: Counter[str] = field(default_factory=Counter)
    category_sources: dict[str, _Mix] = field(default_factory=lambda: defaultdict(_Mix))
    media: Counter[str] = field(default_factory=Counter)
    hood_counts: Counter[str] = field(default_factory=Counter)
    hood_attrs: dict[str, dict[str, Counter[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    hood_points: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    weekdays: list[int] = field(default_factory=lambda: [0] * 7)
    year_months: Counter[tuple[int, int]] = field(default_factory=Counter)
    notes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    kind_notes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    closed: Counter[str] = field(default_factory=Counter)
    kinds: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    kind_hours: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # (category, requested ms, resolved within MAX_HOURS) of every case, for the open share.
    outcomes: list[tuple[str, int, bool]] = field(default_factory=list)
    durations: list[_Case] = field(default_factory=list)
    rows: int = 0
    zero: int = 0
    backwards: int = 0


def _local_parts(requested: str) -> tuple[int, int, int] | None:
    """Return (hour, weekday Monday=0, month) of a floating local timestamp, or None."""
    try:
        moment = datetime.fromisoformat(requested[:19])
    except ValueError:
        return None
    return moment.hour, moment.weekday(), moment.month


def _tally_row(t: _Tally, row: dict[str, Any], newest: int) -> None:
    requested = str(row.get("requested_datetime") or "")
    start = parse_timestamp(requested)
    parts = _local_parts(requested)
    if start is None or parts is None:
        return
    hour, weekday, month = parts
    t.rows += 1
    cat = row.get("service_name") or ""
    sub = row.get("service_subtype") or ""
    agency = row.get("agency_responsible") or ""
    source = row.get("source") or ""
    # The demo generates today's cases: what is asked of whom drifts over the years (Parking
    # Enforcement is 5 % of the 2008-2019 sample, 18 % of its last two years).
    weight = 0.5 ** ((newest - start) / (_MIX_HALF_LIFE_YEARS * 365.25 * 24 * _HOUR_MS))
    t.categories.add(cat, weight)
    t.subtypes[cat].add(sub, weight)
    t.details[(cat, sub)].add(row.get("service_details") or "", weight)
    t.agencies[cat].add(agency, weight)
    t.subtype_agencies[(cat, sub)].add(agency, weight)
    t.sources[source] += 1
    t.category_sources[cat].add(source, weight)
    t.media[source] += bool(row.get("media_url"))
    t.hours[hour] += 1
    t.weekdays[weekday] += 1
    t.year_months[(int(requested[:4]), month)] += 1
    closed = row.get("closed_date")
    end = parse_timestamp(closed) if closed else None
    hours = None if end is None else (end - start) / _HOUR_MS
    t.outcomes.append((cat, start, hours is not None and 0 <= hours < MAX_HOURS))
    if end is not None and hours is not None:
        notes = str(row.get("status_notes") or "")
        kind = quality.closure_kind(notes, True)
        t.closed[cat] += 1
        t.kinds[cat][kind] += 1
        if hours < 0:
            t.backwards += 1
        elif kind in NOT_RESOLUTIONS:
            t.kind_notes[kind][notes] += 1
            t.kind_hours[kind].append(math.log1p(hours))
        else:
            t.notes[cat][notes] += 1
            if hours < MAX_HOURS:
                t.durations.append(
                    _Case(cat, sub, agency, source, hour, weekday, month, math.log1p(hours))
                )
    _tally_place(t, row)


def _tally_place(t: _Tally, row: dict[str, Any]) -> None:
    lat, lon = parse_float(row.get("lat")), parse_float(row.get("long"))
    if lat == 0 or lon == 0:
        t.zero += 1
    hood = row.get("neighborhoods_sffind_boundaries") or ""
    if not hood:
        return
    t.hood_counts[hood] += 1
    attrs = t.hood_attrs[hood]
    attrs["district"][row.get("supervisor_district") or ""] += 1
    attrs["police"][row.get("police_district") or ""] += 1
    parts = str(row.get("address") or "").split(",")
    if parts and parts[0].split(" ", 1)[0].isdigit() and " " in parts[0]:
        attrs["street"][parts[0].split(" ", 1)[1].strip()] += 1
    if parts and parts[-1].strip().isdigit():
        attrs["zip"][parts[-1].strip()] += 1
    if lat and lon and SF_LAT[0] <= lat <= SF_LAT[1] and SF_LONG[0] <= lon <= SF_LONG[1]:
        t.hood_points[hood].append((lat, lon))


def _seasonality(t: _Tally) -> list[float]:
    """Return each month's share of its year's cases, averaged over the years, times 12."""
    years = Counter[int]()
    for (year, _), n in t.year_months.items():
        years[year] += n
    # Only whole years: a partial first or last year would tilt the months it covers.
    whole = [y for y in years if all((y, m) in t.year_months for m in range(1, 13))]
    if not whole:
        return [1.0] * 12
    return [
        round(12 * statistics.fmean(t.year_months[(y, m)] / years[y] for y in whole), 4)
        for m in range(1, 13)
    ]


def _open_shares(t: _Tally) -> dict[str, Any]:
    """Return the share of cases not resolved within MAX_HOURS, among those old enough to tell."""
    newest = max(start for _, start, _ in t.outcomes)
    old = [(cat, ok) for cat, start, ok in t.outcomes if newest - start >= MAX_HOURS * _HOUR_MS]
    totals = Counter(cat for cat, _ in old)
    hits: dict[str, Counter[str]] = {cat: Counter() for cat in totals}
    for cat, ok in old:
        hits[cat]["stays_open"] += not ok
    return _shrunk_shares(hits, totals, ["stays_open"], _OPEN_PRIOR)


def calibrate(paths: Iterable[Path]) -> dict[str, Any]:
    """Return calibration tables (mixes, duration effects, shares, centroids) from real files."""
    t = _Tally()
    names = []
    for path in paths:
        names.append(Path(path).name)
        stamps = (parse_timestamp(r.get("requested_datetime")) for r in read_rows(path, False))
        newest = max((s for s in stamps if s is not None), default=0)
        for row in read_rows(path, progress=False):
            _tally_row(t, row, newest)
    if not t.rows:
        raise InputError(f"no case with a readable requested_datetime in {', '.join(names)}")
    durations = fit_durations(t.durations)
    closures = _shrunk_shares(t.kinds, t.closed, NOT_RESOLUTIONS, _OPEN_PRIOR)
    kind_shift = {
        kind: round(statistics.fmean(values) - durations["mean"], 4)
        for kind, values in t.kind_hours.items()
    }
    return {
        "computed_from": names,
        "rows": t.rows,
        "categories": [
            {
                "name": cat,
                "weight": weight,
                "agencies": t.agencies[cat].top(5),
                "sources": t.category_sources[cat].top(6),
                "subtypes": [
                    [
                        sub,
                        n,
                        t.details[(cat, sub)].top(5),
                        t.subtype_agencies[(cat, sub)].top(5),
                    ]
                    for sub, n in t.subtypes[cat].top()
                ],
                "closed_notes": _mix(t.notes[cat], 8),
            }
            for cat, weight in t.categories.top(len(t.categories.counts))
            if t.subtypes[cat].top() and t.agencies[cat].top()
        ],
        "neighborhoods": _neighborhoods(t),
        "sources": _mix(t.sources, 10),
        "media_share": {s: round(t.media[s] / n, 4) for s, n in t.sources.items() if s},
        "closed_notes": _mix(Counter(sum(t.notes.values(), Counter())), 10),
        "closure_kinds": {
            "shares": closures,
            "notes": {kind: _wordings(t.kind_notes[kind]) for kind in NOT_RESOLUTIONS},
            "log_hours_shift": kind_shift,
        },
        "stays_open": _open_shares(t),
        "durations": durations,
        "hour_of_day": t.hours,
        "weekday": t.weekdays,
        "month": _seasonality(t),
        "quirks": {
            "lat_zero_share": round(t.zero / t.rows, 5),
            "closed_before_open_share": round(t.backwards / t.rows, 5),
        },
    }


def _neighborhoods(t: _Tally) -> list[dict[str, Any]]:
    out = []
    for hood, count in t.hood_counts.most_common():
        points, attrs = t.hood_points[hood], t.hood_attrs[hood]
        if len(points) < 3 or not attrs["street"]:
            continue
        out.append(
            {
                "name": hood,
                "weight": count,
                "supervisor_district": attrs["district"].most_common(1)[0][0],
                "police_district": attrs["police"].most_common(1)[0][0],
                "zip": (attrs["zip"].most_common(1) or [("", 0)])[0][0],
                "streets": [s for s, _ in attrs["street"].most_common(8)],
                "center": [
                    round(statistics.fmean(p[0] for p in points), 5),
                    round(statistics.fmean(p[1] for p in points), 5),
                ],
                "spread": [
                    round(statistics.pstdev(p[0] for p in points), 5),
                    round(statistics.pstdev(p[1] for p in points), 5),
                ],
            }
        )
    return out


def write_calibration(paths: Iterable[Path], out: Path = CALIBRATION) -> dict[str, Any]:
    """Return the calibration of `paths`, after writing it to `out` as indented JSON."""
    cal = calibrate(paths)
    out.write_text(json.dumps(cal, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return cal
