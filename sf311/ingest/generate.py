"""Seeded synthetic SF 311 cases in the API's JSON form, calibrated on facts of the real data.

calibration.json (written by sf311.ingest.calibration) holds aggregates of the real samples, no
rows: mixes, seasonality, closure kinds and the effects that set each case's resolution time."""

from __future__ import annotations

import bisect
import csv
import json
import math
import random
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

from sf311.contract.city import SF_LAT, SF_LONG
from sf311.ingest.calibration import CALIBRATION

FIRST_ID = 16_000_001
# Fixed, not "now": the same seed must give the same file on any day.
DEFAULT_END = datetime(2023, 11, 28, 6, 0, 0)


class _Choice:
    """Weighted choice by cumulative weights and bisect."""

    def __init__(self, items: list[Any], weights: list[float]) -> None:
        self.items = items
        self.cumulative = list(accumulate(weights))
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random) -> Any:
        """Return one item, drawn by weight."""
        return self.items[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


def _mix_choice(mix: list[list[Any]]) -> _Choice:
    """Return a choice over a calibration mix of [value, count] pairs."""
    return _Choice([v for v, *_ in mix], [m[1] for m in mix])


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000")


class _Durations:
    """Draws log1p(hours to close) from calibrated additive effects and residual quantiles."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.residuals = table["residuals"]

    def draw(self, rng: random.Random, case: dict[str, Any], moment: datetime) -> float:
        """Return a log1p(hours) for a case requested at `moment` (local time)."""
        t = self.table
        mu = (
            t["mean"]
            + t["category"].get(case["service_name"], 0.0)
            + t["subtype"].get(case["service_name"], {}).get(case["service_subtype"], 0.0)
            + t["agency"].get(case["agency_responsible"], 0.0)
            + t["source"].get(case["source"], 0.0)
            + t["hour"].get(str(moment.hour), 0.0)
            + t["weekday"].get(str(moment.weekday()), 0.0)
            + t["month"].get(str(moment.month), 0.0)
        )
        qs = self.residuals.get(case["service_name"]) or self.residuals["global"]
        at = rng.random() * (len(qs) - 1)
        i = int(at)
        return mu + qs[i] + (at - i) * (qs[i + 1] - qs[i])


def _cumulative_day_weights(
    start: datetime, days: int, month: list[float], weekday: list[int]
) -> list[float]:
    """Return the cumulative case weight at the end of each day (seasonality and weekdays)."""
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    weights = [
        month[(first + timedelta(days=d)).month - 1]
        * weekday[(first + timedelta(days=d)).weekday()]
        for d in range(max(days, 1))
    ]
    return list(accumulate(weights))


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
        self.day_weights = _cumulative_day_weights(self.start, days, cal["month"], cal["weekday"])
        cats = cal["categories"]
        self.categories = _Choice(cats, [c["weight"] for c in cats])
        self.subtypes = {
            c["name"]: _Choice(c["subtypes"], [s[1] for s in c["subtypes"]]) for c in cats
        }
        self.agencies = {c["name"]: _mix_choice(c["agencies"]) for c in cats}
        self.subtype_agencies = {
            (c["name"], s[0]): _mix_choice(s[3]) for c in cats for s in c["subtypes"] if s[3]
        }
        self.hoods = _Choice(cal["neighborhoods"], [h["weight"] for h in cal["neighborhoods"]])
        self.hood_numbers = {h["name"]: i for i, h in enumerate(cal["neighborhoods"], 1)}
        everywhere = _mix_choice(cal["sources"])
        self.sources = {
            c["name"]: _mix_choice(c["sources"]) if c["sources"] else everywhere for c in cats
        }
        self.media_share = cal["media_share"]
        notes = _mix_choice(cal["closed_notes"])
        self.notes = {
            c["name"]: _mix_choice(c["closed_notes"]) if c["closed_notes"] else notes for c in cats
        }
        kinds = cal["closure_kinds"]
        self.kind_shares = kinds["shares"]
        # A kind without a wording in the real files is not drawn: its notes could not say it.
        self.kind_notes = {k: _mix_choice(v) for k, v in kinds["notes"].items() if v}
        self.kind_shift = kinds["log_hours_shift"]
        self.stays_open = cal["stays_open"]
        self.durations = _Durations(cal["durations"])
        self.hours = _Choice(list(range(24)), cal["hour_of_day"])
        self.quirks = cal["quirks"]

    def _closure(self, category: str) -> str | None:
        """Return the kind of closure that resolves nothing a case gets, or None."""
        shares = self.kind_shares.get(category) or self.kind_shares["global"]
        u = self.rng.random()
        for kind in self.kind_notes:
            if u < shares[kind]:
                return kind
            u -= shares[kind]
        return None

    def case(self, index: int, total: int) -> dict[str, Any]:
        """Return the index-th of `total` cases; ids and days ascend with the index."""
        rng = self.rng
        # Cases spread over days by the real weekly and yearly rhythm, in index order.
        at = (index + 0.5) / max(total, 1) * self.day_weights[-1]
        day = self.start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            days=min(bisect.bisect_left(self.day_weights, at), len(self.day_weights) - 1)
        )
        requested = day + timedelta(
            hours=self.hours.pick(rng), minutes=rng.randrange(60), seconds=rng.randrange(60)
        )
        cat = self.categories.pick(rng)
        name = cat["name"]
        subtype, _, details, _ = self.subtypes[name].pick(rng)
        hood = self.hoods.pick(rng)
        source = self.sources[name].pick(rng)
        agencies = self.subtype_agencies.get((name, subtype), self.agencies[name])
        rid = FIRST_ID + index
        row: dict[str, Any] = {
            "service_request_id": str(rid),
            "requested_datetime": _fmt(requested),
            "status_description": "Open",
            "status_notes": "open",
            "agency_responsible": agencies.pick(rng),
            "service_name": name,
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
        self._close(row, requested)
        return row

    def _close(self, row: dict[str, Any], requested: datetime) -> None:
        """Give `row` its closure (date, notes) unless it is still open at the generator's end."""
        rng = self.rng
        name = row["service_name"]
        log_hours = self.durations.draw(rng, row, requested)
        kind = self._closure(name)
        stays = self.stays_open.get(name, self.stays_open["global"])["stays_open"]
        if rng.random() < stays:
            closed = None
        else:
            if kind is not None:
                log_hours += self.kind_shift.get(kind, 0.0)
            closed = requested + timedelta(hours=max(math.expm1(log_hours), 0.0))
            if rng.random() < self.quirks["closed_before_open_share"]:
                closed = requested - timedelta(minutes=rng.randrange(1, 600))
        if closed is not None and closed <= self.end:
            notes = self.notes[name] if kind is None else self.kind_notes[kind]
            row["status_description"] = "Closed"
            row["status_notes"] = notes.pick(rng)
            row["closed_date"] = _fmt(closed)
            row["updated_datetime"] = _fmt(max(closed, requested))
        else:
            row["updated_datetime"] = _fmt(requested + timedelta(minutes=rng.randrange(1, 120)))

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
