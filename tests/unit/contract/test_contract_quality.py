"""The closure-kind rule and the city box on explicit notes and coordinates."""

from __future__ import annotations

import csv
import re

import pytest

from sf311.contract import quality


@pytest.mark.parametrize(
    ("notes", "kind"),
    [
        ("Case Resolved", "resolved"),
        ("Case Resolved - Pickup completed.", "resolved"),
        ("resolved: Maximo Service Request has been resolved", "resolved"),
        ("Work Completed", "resolved"),
        ("Sign repaired or replaced. Please resubmit if this", "resolved"),
        ("Case Resolved - WASTE NOT FOUND", "resolved"),
        (
            "Case is a Duplicate - Request is a duplicate and has been previously reported",
            "duplicate",
        ),
        ("Case Resolved - DUPLICATE SERVICE REQUEST .", "duplicate"),
        ("Case Transferred", "transferred"),
        ("Case Transferred - Area was cleaned around the encampment", "transferred"),
        ("Case is Invalid", "cancelled_or_invalid"),
        ("Cancelled", "cancelled_or_invalid"),
        ("Request cancelled by customer", "cancelled_or_invalid"),
        ("Administrative Closure - Administrative closure by Recology", "cancelled_or_invalid"),
        ("ADMIN CLOSED", "cancelled_or_invalid"),
        ("Unable to Locate - AREA/ITEM INACCESSIBLE", "cancelled_or_invalid"),
        ("Insufficient Information", "cancelled_or_invalid"),
        ("The report has been logged and will help the City", "unknown"),
        ("Noise informational reports are closed and summarized", "unknown"),
        ("Scheduled - Dispatched driver", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_closed_cases_get_the_kind_their_notes_say(notes: str | None, kind: str) -> None:
    assert quality.closure_kind(notes, closed=True) == kind


def test_open_cases_are_unknown_whatever_their_notes_say() -> None:
    assert quality.closure_kind("Case Resolved", closed=False) == "unknown"


def test_words_inside_other_words_do_not_match() -> None:
    # "undone" and "completely" hold "done" and "complete" but say no resolution.
    assert quality.closure_kind("undone, completely open", closed=True) == "unknown"


def test_every_kind_of_the_rule_is_a_closure_kind_and_every_flag_is_documented() -> None:
    assert {kind for kind, _ in quality.CLOSURE_RULE} < set(quality.CLOSURE_KINDS)
    assert set(quality.LOCATION_FLAGS + quality.RESOLUTION_FLAGS) < set(quality.FLAGS)


@pytest.mark.parametrize(
    ("lat", "long", "inside"),
    [(37.7749, -122.4194, True), (95.0, -200.0, False), (37.1, -121.9, False), (0.0, 0.0, False)],
)
def test_the_city_box(lat: float, long: float, inside: bool) -> None:
    assert quality.in_sf(lat, long) is inside


def test_every_real_note_a_pattern_matches_holds_one_of_its_keywords(shared_data) -> None:
    notes = set()
    for path in shared_data.glob("*.csv"):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                notes.add(row.get("status_notes") or row.get("Status Notes") or "")
    assert len(notes) > 1000
    for kind, pattern in quality.CLOSURE_RULE:
        words = quality.CLOSURE_KEYWORDS[kind]
        for text in notes:
            if re.search(pattern, text):
                assert any(w in text.lower() for w in words), (kind, text)
