"""What reconciliation and the :updated_at watermark need from the source: the SODA server's
system fields, deletions, silent changes and per-day counts, and the extractor reading them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from sf311.ingest.extract import (
    DROPPED_FIELDS,
    SYSTEM_FIELDS,
    iter_pages,
    keyset_where,
    socrata_client,
)
from sf311.ingest.soda_server import Dataset, SoqlError
from sf311.ingest.sources import IdsSource
from sf311.ingest.watermark import Watermark
from sf311.platform.pipeline import reconcile_line
from sf311.warehouse.reconcile import DayTally, source_days, window
from sf311.warehouse.reconcile_runs import ReconcileCounts, ReconcileRun

LOADED = datetime(2023, 11, 28, 12, 0, tzinfo=UTC)


def case(rid: int, requested: str, updated: str | None = None) -> dict[str, str]:
    return {
        "service_request_id": str(rid),
        "requested_datetime": requested,
        "updated_datetime": updated or requested,
        "status_notes": "as filed",
    }


ROWS = [
    case(1, "2023-11-26T23:59:59.000"),
    case(2, "2023-11-27T00:00:00.000"),
    case(3, "2023-11-27T18:30:00.000"),
    case(4, "2023-11-28T09:00:00.000", "2023-11-28T10:00:00.000"),
]


def body(dataset: Dataset, **params: str) -> list[dict]:
    return json.loads(dataset.query({f"${k}": v for k, v in params.items()}))


def test_system_fields_come_only_when_selected() -> None:
    dataset = Dataset(ROWS, loaded_at=LOADED)
    assert ":updated_at" not in body(dataset, order="service_request_id")[0]
    first = body(dataset, select=":*, *", order="service_request_id")[0]
    assert first[":updated_at"] == first[":created_at"] == "2023-11-28T12:00:00.000Z"
    assert first[":id"] and first["service_request_id"] == "1"
    picked = body(dataset, select=":updated_at, service_request_id", where="service_request_id=2")
    assert picked == [{":updated_at": "2023-11-28T12:00:00.000Z", "service_request_id": "2"}]


def test_a_silent_change_moves_only_updated_at() -> None:
    dataset = Dataset(ROWS, loaded_at=LOADED)
    dataset.change(3, {"status_notes": "rewritten"}, at=LOADED + timedelta(hours=1))
    since = "2023-11-28T12:30:00"
    changed = body(dataset, select=":*, *", where=f":updated_at > '{since}'")
    assert [r["service_request_id"] for r in changed] == ["3"]
    assert changed[0]["status_notes"] == "rewritten"
    assert changed[0]["updated_datetime"] == "2023-11-27T18:30:00.000"
    assert changed[0][":updated_at"] == "2023-11-28T13:00:00.000Z"
    # A literal with its zone compares as the same instant.
    assert body(dataset, where=":updated_at > '2023-11-28T12:30:00.000Z'") == [
        {k: v for k, v in changed[0].items() if k not in SYSTEM_FIELDS}
    ]


def test_deleted_rows_are_gone_and_can_come_back() -> None:
    dataset = Dataset(ROWS, loaded_at=LOADED)
    assert dataset.delete([2, 4, 99]) == 2
    assert [r["service_request_id"] for r in body(dataset, order="service_request_id")] == [
        "1",
        "3",
    ]
    dataset.add([ROWS[1]], at=LOADED + timedelta(days=1))
    back = body(dataset, select=":*, *", where="service_request_id = 2")
    assert back[0][":created_at"] == "2023-11-29T12:00:00.000Z"


def test_counts_and_id_sums_per_day() -> None:
    dataset = Dataset(ROWS, loaded_at=LOADED)
    day = "date_trunc_ymd(requested_datetime)"
    got = body(
        dataset,
        select=f"{day} AS day, count(*) AS cases, sum(service_request_id) AS id_sum",
        where="requested_datetime >= '2023-11-27T00:00:00' AND service_request_id IN (2, 3, 4)",
        group=day,
    )
    assert got == [
        {"day": "2023-11-27T00:00:00.000", "cases": "2", "id_sum": "5"},
        {"day": "2023-11-28T00:00:00.000", "cases": "1", "id_sum": "4"},
    ]
    # Grouped by the alias, ordered descending, default output names.
    by_alias = body(dataset, select=f"{day} AS day, count(*)", group="day", order="day DESC")
    assert [r["count"] for r in by_alias] == ["1", "2", "1"]


@pytest.mark.parametrize(
    "params",
    [
        {"$select": "date_trunc_ymd(requested_datetime) AS day, count(*)"},  # no $group
        {"$select": "status_notes, count(*)", "$group": "service_request_id"},
        {"$select": "date_trunc_ymd(status_notes) AS d, count(*)", "$group": "d"},
        {"$select": "sum(status_notes)", "$group": ""},
    ],
)
def test_grouped_queries_it_cannot_answer_are_errors(params: dict) -> None:
    with pytest.raises(SoqlError):
        Dataset(ROWS).query(params)


def test_keyset_where_adds_rows_changed_since_before_the_start() -> None:
    start = Watermark(datetime(2023, 11, 28, 5), 10)
    since = datetime(2023, 11, 28, 13, 0, 0, 250_000, tzinfo=UTC)
    where = keyset_where(None, None, start, since)
    assert where == (
        "((updated_datetime > '2023-11-28T05:00:00.000' OR (updated_datetime = "
        "'2023-11-28T05:00:00.000' AND service_request_id > 10))"
        " OR :updated_at > '2023-11-28T13:00:00.250')"
    )
    # Once paging is past the start, the keyset alone selects.
    past = Watermark(datetime(2023, 11, 28, 6), 1)
    assert keyset_where(past, None, start, since) == keyset_where(past, None)


def test_the_extractor_reads_silent_changes_and_drops_system_fields(soda) -> None:
    rows = [case(100 + i, f"2023-11-2{i % 7}T08:00:00.000") for i in range(30)]
    server, settings = soda(rows)
    with socrata_client(settings) as client:
        pages = list(iter_pages(client, settings, None, page_size=8))
    newest = max(p.updated_at for p in pages if p.updated_at)
    top = max(p.last for p in pages if p.last)
    # :updated_at stays: it is the case's source_updated_at.
    assert all(k not in DROPPED_FIELDS for p in pages for r in p.rows for k in r)
    assert all(r[":updated_at"].endswith("Z") for p in pages for r in p.rows)

    later = newest + timedelta(seconds=5)
    server.dataset.change(103, {"status_notes": "rewritten"}, at=later)
    server.dataset.change(117, {"status_notes": "rewritten"}, at=later)
    with socrata_client(settings) as client:
        again = list(iter_pages(client, settings, top, page_size=8, changed_since=newest))
        plain = list(iter_pages(client, settings, top, page_size=8))
    got = [r for p in again for r in p.rows]
    assert sorted(int(r["service_request_id"]) for r in got) == [103, 117]
    assert {r["status_notes"] for r in got} == {"rewritten"}
    assert again[-1].updated_at == later
    # Without the system watermark the changes are invisible: updated_datetime did not move.
    assert [r for p in plain for r in p.rows] == []


def test_ids_source_reads_the_rows_of_given_ids(soda) -> None:
    rows = [case(500 + i, "2023-11-27T08:00:00.000") for i in range(450)]
    _, settings = soda(rows)
    wanted = set(range(500, 950, 2)) | {99_999}  # an id the source does not hold
    with IdsSource(settings, wanted) as source:
        blocks = list(source.iter_blocks(10_000))
    assert len(blocks) == 2  # 226 ids in requests of IdsSource.CHUNK
    got = [int(r["service_request_id"]) for b in blocks for r in b.rows.rows]
    assert sorted(got) == sorted(wanted - {99_999})
    assert all(k not in DROPPED_FIELDS for b in blocks for r in b.rows.rows for k in r)


def test_source_days_counts_san_francisco_days(soda) -> None:
    _, settings = soda(ROWS)
    got = source_days(settings, date(2023, 11, 27), date(2023, 11, 28))
    assert got == {date(2023, 11, 27): DayTally(2, 5), date(2023, 11, 28): DayTally(1, 4)}


def test_window_ends_today_and_spans_the_setting(soda) -> None:
    _, settings = soda([], reconcile_window_days=90)
    assert window(settings, date(2026, 3, 31)) == (date(2026, 1, 1), date(2026, 3, 31))


def test_status_line_of_a_refused_run() -> None:
    counts = ReconcileCounts(days_compared=90, days_differing=1, ids_missing_here=2)
    run = ReconcileRun(
        7, date(2026, 1, 1), date(2026, 3, 31), LOADED, LOADED, "refused", counts,
        "600 cases gone from the source, more than 5.0% ...\nsecond line",
    )  # fmt: skip
    line = reconcile_line(run)
    assert line.startswith("  last reconcile #7: refused 2023-11-28 12:00:00 UTC")
    assert "1 of 90 days differ; 2 missing here" in line and line.endswith("5.0% ...")
    assert "none run yet" in reconcile_line(None)


def test_the_reconcile_command_reports_a_refusal_as_an_error(monkeypatch, capsys) -> None:
    import sf311.warehouse.reconcile as job
    from sf311 import cli

    seen = []

    def refuse(settings):
        seen.append(settings.reconcile_window_days)
        raise job.ReconcileRefused("600 cases gone from the source ...: nothing done")

    monkeypatch.setattr(job, "reconcile", refuse)
    assert cli.main(["reconcile", "--days", "7"]) == 1
    assert seen == [7]
    assert "sf311 reconcile: 600 cases gone" in capsys.readouterr().err
