"""Queries the pages do not show verbatim: filter options (with and without the proposed
indexes) and the prediction form's context, against the known cases."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import psycopg
import pytest

from sf311.dashboard import queries

pytestmark = pytest.mark.integration
LA = ZoneInfo("America/Los_Angeles")


def _expected_options(cases: list[dict]) -> dict:
    subtypes: dict[str, set[str]] = {}
    for c in cases:
        subtypes.setdefault(c["service_name"], set()).add(c["service_subtype"])
    return {
        "subtypes_by_category": {k: tuple(sorted(v)) for k, v in subtypes.items()},
        "neighborhoods": tuple(sorted({c["neighborhood"] for c in cases})),
        "districts": tuple(sorted({c["supervisor_district"] for c in cases})),
        # Read from gold.monthly_volume: cases has no index on police_district.
        "police_districts": tuple(sorted({c["police_district"] for c in cases})),
        "sources": tuple(sorted({c["source"] for c in cases})),
        "first_day": min(c["requested_datetime"].astimezone(LA).date() for c in cases),
        "last_day": date(2024, 3, 30),  # the fixture's case opened on 2024-03-30 21:30
    }


def _as_dict(options: queries.Options) -> dict:
    fields = ("subtypes_by_category", "neighborhoods", "districts", "police_districts", "sources")
    return {name: getattr(options, name) for name in (*fields, "first_day", "last_day")}


def test_options_are_the_distinct_values_of_the_rows(dashboard_db, cases):
    with queries.connect(dashboard_db.analyst_dsn) as conn:
        assert _as_dict(queries.options(conn)) == _expected_options(cases)
        # The migrations index every option column, so each is read by a skip scan.
        leads = queries._index_leads(conn)
    assert {("source",), ("supervisor_district",), ("service_name", "service_subtype")} <= leads


def test_case_context_is_the_usual_agency_and_districts(dashboard_db, cases):
    with queries.connect(dashboard_db.analyst_dsn) as conn:
        context = queries.case_context(conn, "Graffiti", "Graffiti on Pole", "Sunset")
        unknown = queries.case_context(conn, "No Such Category", None, "Nowhere")
    in_sunset = [c for c in cases if c["neighborhood"] == "Sunset"]
    assert context.agency_responsible == "Graffiti Agency"
    assert context.supervisor_district == 3
    assert context.police_district == "SUNSET"
    located = [c for c in in_sunset if c["lat"] is not None]
    assert context.lat == pytest.approx(sum(c["lat"] for c in located) / len(located))
    assert context.long == pytest.approx(sum(c["long"] for c in located) / len(located))
    assert unknown == queries.CaseContext(None, None, None, None, None)


def test_analyst_cannot_write(dashboard_db):
    with queries.connect(dashboard_db.analyst_dsn) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("DELETE FROM cases")
