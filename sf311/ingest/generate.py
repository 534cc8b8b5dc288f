"""Seeded synthetic SF 311 cases in the API's JSON form, calibrated on facts of the real data.

calibration.json holds aggregates of the real samples (mixes, quantiles, centroids), no rows."""

from __future__ import annotations

import bisect
import csv
import json
import math
import random
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

from sf311.contract.city import SF_LAT, SF_LONG
from sf311.ingest.files import read_rows
from sf311.ingest.normalize import parse_float, parse_timestamp

CALIBRATION = Path(__file__).with_name("calibration.json")
FIRST_ID = 16_000_001
# Fixed, not "now": the same seed must give the same file on any day.
DEFAULT_END = datetime(2023, 11, 28, 6, 0, 0)
_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_TOP = 12
_MIN_SEEN = 5


def _mix(counter: Counter[str], top: int = _TOP) -> list[list[Any]]:
    # Values seen fewer than _MIN_SEEN times are free text (plates, names): never copied.
    return [[name, n] for name, n in counter.most_common(top) if name and n >= _MIN_SEEN]


def calibrate(paths: Iterable[Path]) -> dict[str, Any]:
    """Return calibration tables (mixes, quantiles, centroids) computed from real files."""
    categories: Counter[str] = Counter()
    subtypes: dict[str, Counter[str]] = defaultdict(Counter)
    details: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    agencies: dict[str, Counter[str]] = defaultdict(Counter)
    hours_to_close: dict[str, list[float]] = defaultdict(list)
    hoods: Counter[str] = Counter()
    hood_attrs: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    hood_points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sources: Counter[str] = Counter()
    media: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    hours = [0] * 24
    rows = zero = backwards = 0
    names = []
    for path in paths:
        names.append(Path(path).name)
        for row in read_rows(path, progress=False):
            requested, closed = row.get("requested_datetime"), row.get("closed_date")
            start = parse_timestamp(requested)
            if start is None:
                continue
            rows += 1
            cat = row.get("service_name") or ""
            sub = row.get("service_subtype") or ""
            categories[cat] += 1
            subtypes[cat][sub] += 1
            details[(cat, sub)][row.get("service_details") or ""] += 1
            agencies[cat][row.get("agency_responsible") or ""] += 1
            hours[int(str(requested)[11:13]) if "T" in str(requested) else 0] += 1
            end = parse_timestamp(closed) if closed else None
            if end is not None:
                if end < start:
                    backwards += 1
                else:
                    hours_to_close[cat].append((end - start) / 3_600_000)
                notes[row.get("status_notes") or ""] += 1
            source = row.get("source") or ""
            sources[source] += 1
            media[source] += bool(row.get("media_url"))
            hood = row.get("neighborhoods_sffind_boundaries") or ""
            lat, lon = parse_float(row.get("lat")), parse_float(row.get("long"))
            if lat == 0 or lon == 0:
                zero += 1
            if not hood:
                continue
            hoods[hood] += 1
            attrs = hood_attrs[hood]
            attrs["district"][row.get("supervisor_district") or ""] += 1
            attrs["police"][row.get("police_district") or ""] += 1
            address = str(row.get("address") or "")
            parts = address.split(",")
            if parts and parts[0].split(" ", 1)[0].isdigit() and " " in parts[0]:
                attrs["street"][parts[0].split(" ", 1)[1].strip()] += 1
            if parts and parts[-1].strip().isdigit():
                attrs["zip"][parts[-1].strip()] += 1
            if lat and lon and SF_LAT[0] <= lat <= SF_LAT[1] and SF_LONG[0] <= lon <= SF_LONG[1]:
                hood_points[hood].append((lat, lon))
    return {
        "computed_from": names,
        "rows": rows,
        "categories": [
            {
                "name": cat,
                "weight": count,
                "agencies": _mix(agencies[cat], 5),
                "subtypes": [
                    [sub, n, _mix(details[(cat, sub)], 5)] for sub, n in _mix(subtypes[cat])
                ],
                "hours_to_close": _quantiles(hours_to_close[cat]),
            }
            for cat, count in categories.most_common()
            if cat
            and len(hours_to_close[cat]) >= _MIN_SEEN
            and _mix(subtypes[cat])
            and _mix(agencies[cat])
        ],
        "neighborhoods": [
            {
                "name": hood,
                "weight": count,
                "supervisor_district": hood_attrs[hood]["district"].most_common(1)[0][0],
                "police_district": hood_attrs[hood]["police"].most_common(1)[0][0],
                "zip": (hood_attrs[hood]["zip"].most_common(1) or [("", 0)])[0][0],
                "streets": [s for s, _ in hood_attrs[hood]["street"].most_common(8)],
                "center": [
                    round(statistics.fmean(p[0] for p in hood_points[hood]), 5),
                    round(statistics.fmean(p[1] for p in hood_points[hood]), 5),
                ],
                "spread": [
                    round(statistics.pstdev(p[0] for p in hood_points[hood]), 5),
                    round(statistics.pstdev(p[1] for p in hood_points[hood]), 5),
                ],
            }
            for hood, count in hoods.most_common()
            if len(hood_points[hood]) >= 3 and hood_attrs[hood]["street"]
        ],
        "sources": _mix(sources, 10),
        "media_share": {s: round(media[s] / n, 4) for s, n in sources.items() if s},
        "closed_notes": _mix(notes, 10),
        "hour_of_day": hours,
        "quirks": {
            "lat_zero_share": round(zero / rows, 5),
            "closed_before_open_share": round(backwards / rows, 5),
        },
    }


def _quantiles(values: list[float]) -> list[float]:
    if not values:
        return []
    values = sorted(values)
    last = len(values) - 1
    return [round(values[round(q * last)], 4) for q in _QUANTILES]


class _Choice:
    """Weighted choice by cumulative weights and bisect."""

    def __init__(self, items: list[Any], weights: list[float]) -> None:
        self.items = items
        self.cumulative = list(accumulate(weights))
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000")


class CaseGenerator:
    """Draws realistic raw cases (API JSON form: strings, absent when null) from calibration."""

    def __init__(
        self,
        seed: int = 0,
        end: datetime = DEFAULT_END,
        days: int = 365,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        cal = calibration or json.loads(CALIBRATION.read_text())
        self.rng = random.Random(seed)
        self.end = end
        self.start = end - timedelta(days=days)
        cats = cal["categories"]
        self.categories = _Choice(cats, [c["weight"] for c in cats])
        self.subtypes = {
            c["name"]: _Choice(c["subtypes"], [s[1] for s in c["subtypes"]]) for c in cats
        }
        self.agencies = {
            c["name"]: _Choice([a for a, _ in c["agencies"]], [w for _, w in c["agencies"]])
            for c in cats
        }
        self.hoods = _Choice(cal["neighborhoods"], [h["weight"] for h in cal["neighborhoods"]])
        self.hood_numbers = {h["name"]: i for i, h in enumerate(cal["neighborhoods"], 1)}
        self.sources = _Choice([s for s, _ in cal["sources"]], [w for _, w in cal["sources"]])
        self.media_share = cal["media_share"]
        self.notes = _Choice(
            [n for n, _ in cal["closed_notes"]], [w for _, w in cal["closed_notes"]]
        )
        self.hours = _Choice(list(range(24)), cal["hour_of_day"])
        self.quirks = cal["quirks"]

    def _hours_to_close(self, quantiles: list[float]) -> float:
        u = self.rng.random() * (len(_QUANTILES) - 1)
        i = min(int(u), len(_QUANTILES) - 2)
        low, high = max(quantiles[i], 0.01), max(quantiles[i + 1], 0.01)
        return math.exp(math.log(low) + (u - i) * (math.log(high) - math.log(low)))

    def case(self, index: int, total: int) -> dict[str, Any]:
        """Return the index-th of `total` cases; ids and days ascend with the index."""
        rng = self.rng
        span_days = (self.end - self.start).days
        day = self.start.replace(hour=0, minute=0, second=0) + timedelta(
            days=index * span_days // max(total, 1)
        )
        requested = day + timedelta(
            hours=self.hours.pick(rng), minutes=rng.randrange(60), seconds=rng.randrange(60)
        )
        cat = self.categories.pick(rng)
        subtype, _, details = self.subtypes[cat["name"]].pick(rng)
        hood = self.hoods.pick(rng)
        source = self.sources.pick(rng)
        rid = FIRST_ID + index
        row: dict[str, Any] = {
            "service_request_id": str(rid),
            "requested_datetime": _fmt(requested),
            "status_description": "Open",
            "status_notes": "open",
            "agency_responsible": self.agencies[cat["name"]].pick(rng),
            "service_name": cat["name"],
            "service_subtype": subtype,
            "supervisor_district": hood["supervisor_district"],
            "neighborhoods_sffind_boundaries": hood["name"],
            "police_district": hood["police_district"],
            "source": source,
            "data_as_of": _fmt(self.end),
            "data_loaded_at": _fmt(self.end + timedelta(minutes=7)),
            ":@computed_region_jwn9_ihcz": str(self.hood_numbers[hood["name"]]),
        }
        if details:
            row["service_details"] = rng.choices([d for d, _ in details], [w for _, w in details])[
                0
            ]
        street = rng.choice(hood["streets"])
        row["street"] = street
        number = rng.randrange(1, 40) * 50 + rng.randrange(50)
        row["address"] = f"{number} {street}, SAN FRANCISCO, CA, {hood['zip']}"
        if rng.random() < self.quirks["lat_zero_share"]:
            lat = lon = 0.0
        else:
            lat = min(max(rng.gauss(hood["center"][0], hood["spread"][0]), SF_LAT[0]), SF_LAT[1])
            lon = min(max(rng.gauss(hood["center"][1], hood["spread"][1]), SF_LONG[0]), SF_LONG[1])
        row["lat"], row["long"] = f"{lat:.12f}", f"{lon:.12f}"
        row["point"] = {"latitude": f"{lat:.7f}", "longitude": f"{lon:.7f}", "human_address": ""}
        row["point_geom"] = {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]}
        if rng.random() < self.media_share.get(source, 0.0):
            row["media_url"] = {"url": f"https://mobile311.sfgov.org/reports/{rid}/photos"}
        closed = requested + timedelta(hours=self._hours_to_close(cat["hours_to_close"]))
        if rng.random() < self.quirks["closed_before_open_share"]:
            closed = requested - timedelta(minutes=rng.randrange(1, 600))
        if closed <= self.end:
            row["status_description"] = "Closed"
            row["status_notes"] = self.notes.pick(rng)
            row["closed_date"] = _fmt(closed)
            row["updated_datetime"] = _fmt(max(closed, requested))
        else:
            row["updated_datetime"] = _fmt(requested + timedelta(minutes=rng.randrange(1, 120)))
        return row

    def cases(self, rows: int) -> Iterator[dict[str, Any]]:
        """Yield `rows` cases in id order."""
        for index in range(rows):
            yield self.case(index, rows)


def write_cases(
    out: Path | None,
    rows: int,
    seed: int = 0,
    end: datetime = DEFAULT_END,
    days: int | None = None,
) -> None:
    """Write `rows` cases up to `end` (LA time) as a JSON array, JSON lines (or stdout) or CSV."""
    # By default about 3,000 a day, today's rate, over at least a month.
    days = days or max(30, math.ceil(rows / 3000))
    cases = CaseGenerator(seed, end=end, days=days).cases(rows)
    if out is None:
        _write_lines(cases, sys.stdout)
        return
    with open(out, "w", encoding="utf-8", newline="") as fh:
        if out.suffix == ".json":
            fh.write("[")
            for i, case in enumerate(cases):
                fh.write(("," if i else "") + json.dumps(case, separators=(",", ":")) + "\n")
            fh.write("]\n")
        elif out.suffix == ".csv":
            _write_csv(cases, fh)
        else:
            _write_lines(cases, fh)


def _write_lines(cases: Iterable[dict[str, Any]], fh: IO[str]) -> None:
    for case in cases:
        fh.write(json.dumps(case, separators=(",", ":")) + "\n")


def _write_csv(cases: Iterable[dict[str, Any]], fh: IO[str]) -> None:
    columns = [
        "service_request_id", "requested_datetime", "closed_date", "updated_datetime",
        "status_description", "status_notes", "agency_responsible", "service_name",
        "service_subtype", "service_details", "address", "street", "supervisor_district",
        "neighborhoods_sffind_boundaries", "police_district", "lat", "long", "point", "source",
        "media_url", "data_as_of", "data_loaded_at",
    ]  # fmt: skip
    writer = csv.DictWriter(fh, columns, extrasaction="ignore")
    writer.writeheader()
    for case in cases:
        case["point"] = f"POINT ({case['long']} {case['lat']})"
        if "media_url" in case:
            case["media_url"] = case["media_url"]["url"]
        writer.writerow(case)
