"""The real SF 311 samples through file ingest -> Kafka -> a bounded stream run: every case lands
in silver and Postgres, flagged and closure-kinded as sf311.contract.quality says; a replay
brings a warehouse loaded under the old rule (closures before openings quarantined) to it."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from delta.tables import DeltaTable
from stream_support import StreamEnv, drop_env, make_env

from sf311.contract import quality
from sf311.contract.registry import SchemaRegistry
from sf311.ingest.run import ingest_file
from sf311.lakehouse import silver
from sf311.lakehouse.replay import replay
from sf311.lakehouse.stream import run_stream
from sf311.settings import Settings
from tests.support.silver_frames import local_to_utc

pytestmark = pytest.mark.integration

API, EXPORT = "cases_10k_2008_2019.csv", "export_northbeach_2018_2019.csv"
# A file row placed at latitude 95 / longitude -200, and a message of a producer that skips the
# ingest's checks with the same point.
ODD_ROW_ID, ODD_MESSAGE_ID = 99_000_001, 99_000_002
COLUMNS = (
    "service_request_id, quality_flags, closure_kind, resolution_hours, lat, long, closed_date"
)


@pytest.fixture
def real_env(settings: Settings, tmp_path: Path) -> Iterator[StreamEnv]:
    """A StreamEnv whose bounded run takes the ~14k messages in a few batches."""
    env, schema = make_env(
        settings,
        tmp_path,
        stream_max_offsets_per_trigger=20_000,
        stream_lake_max_offsets_per_trigger=20_000,
    )
    yield env
    drop_env(settings, env, schema)


def source_cases(folder: Path) -> pd.DataFrame:
    """Return id, requested, closed (UTC), notes, lat, long of both files, read with pandas."""
    api = pd.read_csv(folder / API, dtype=str, keep_default_na=False)
    export = pd.read_csv(folder / EXPORT, dtype=str, keep_default_na=False)
    export_times = {"format": "%m/%d/%Y %I:%M:%S %p", "errors": "coerce"}
    frames = []
    for frame, names, times in (
        (api, ["service_request_id", "requested_datetime", "closed_date", "status_notes",
               "lat", "long"], {}),
        (export, ["CaseID", "Opened", "Closed", "Status Notes", "Latitude", "Longitude"],
         export_times),
    ):  # fmt: skip
        part = frame[names].set_axis(["id", "requested", "closed", "notes", "lat", "long"], axis=1)
        for col in ("requested", "closed"):
            local = pd.to_datetime(part[col].replace("", None), **times)
            part[col] = local_to_utc(local.dt.strftime("%Y-%m-%dT%H:%M:%S"))
        frames.append(part)
    out = pd.concat(frames, ignore_index=True)
    out["id"] = out["id"].astype(int)
    return out


def expected_flags(source: pd.DataFrame) -> dict[int, set[str]]:
    """Return {id: flags} computed from the files' raw values."""
    out: dict[int, set[str]] = {}
    for row in source.itertuples():
        flags = set()
        if pd.notna(row.closed) and row.closed < row.requested:
            flags.add(quality.CLOSED_BEFORE_OPENED)
        lat = float(row.lat) if row.lat else 0.0
        lon = float(row.long) if row.long else 0.0
        if lat == 0 or lon == 0:
            flags.add(quality.LOCATION_MISSING)
        elif not quality.in_sf(lat, lon):
            flags.add(quality.LOCATION_OUTSIDE_SF)
        out[row.id] = flags
    return out


def write_odd_row(folder: Path, path: Path) -> None:
    """Write one export row with CaseID ODD_ROW_ID at latitude 95, longitude -200."""
    with (folder / EXPORT).open(newline="") as fh:
        reader = csv.DictReader(fh)
        row = next(reader)
        header = reader.fieldnames
    row.update(CaseID=str(ODD_ROW_ID), Latitude="95", Longitude="-200", Point="POINT (-200 95)")
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerow(row)


def warehouse(env: StreamEnv) -> dict[int, tuple]:
    with env.pg() as conn:
        return {r[0]: r[1:] for r in conn.execute(f"SELECT {COLUMNS} FROM cases").fetchall()}


def test_every_real_case_lands_flagged_and_replay_brings_old_rows_to_the_rule(
    spark, real_env, shared_data, tmp_path
):
    started = time.monotonic()
    source = source_cases(shared_data)
    assert source["id"].nunique() == len(source) == 14_209
    odd = tmp_path / "odd.csv"
    write_odd_row(shared_data, odd)
    for path in (shared_data / API, shared_data / EXPORT, odd):
        ingest_file(real_env.settings, path, progress=False)
    requested = datetime(2019, 3, 1, 17, tzinfo=UTC)
    real_env.produce_cases([{
        "service_request_id": ODD_MESSAGE_ID, "requested_datetime": requested,
        "updated_datetime": requested, "service_name": "Graffiti", "lat": 95.0, "long": -200.0,
    }])  # fmt: skip

    run_stream(spark, real_env.settings, once=True)
    loaded = warehouse(real_env)

    # Every real id lands, nothing is quarantined.
    assert set(loaded) == set(source["id"]) | {ODD_ROW_ID, ODD_MESSAGE_ID}
    quarantine = real_env.settings.table_path(silver.QUARANTINE_TABLE)
    assert not DeltaTable.isDeltaTable(spark, quarantine)
    # Flags as the raw values say; the impossible value is null.
    flags = {i: set(row[0]) for i, row in loaded.items()}
    expected = expected_flags(source)
    assert {i: flags[i] for i in expected} == expected
    before = {i for i, f in expected.items() if quality.CLOSED_BEFORE_OPENED in f}
    assert len(before) >= 48
    assert all(loaded[i][2] is None and loaded[i][5] is not None for i in before)
    for odd_id in (ODD_ROW_ID, ODD_MESSAGE_ID):
        assert flags[odd_id] == {quality.LOCATION_OUTSIDE_SF}
        assert loaded[odd_id][3:5] == (None, None)
    with real_env.pg() as conn:
        assert conn.execute(
            "SELECT count(*) FROM cases WHERE lat IS NOT NULL"
            " AND NOT (lat BETWEEN 37.695 AND 37.840 AND long BETWEEN -122.525 AND -122.345)"
        ).fetchone() == (0,)
    # Bronze keeps the raw point: in extra from the file, as sent from the other producer.
    raw = real_env.delta(spark, "bronze.cases_raw").where(
        f"case.service_request_id IN ({ODD_ROW_ID}, {ODD_MESSAGE_ID})"
    )
    by_id = {r.case.service_request_id: r.case for r in raw.collect()}
    assert json.loads(by_id[ODD_ROW_ID].extra) == {"lat": "95", "long": "-200"}
    assert (by_id[ODD_MESSAGE_ID].lat, by_id[ODD_MESSAGE_ID].long) == (95.0, -200.0)
    # Closure kinds: the Spark rule agrees with the Python rule on every real note.
    closed = source["closed"].notna()
    kinds = {
        i: quality.closure_kind(n.strip() or None, c)
        for i, n, c in zip(source["id"], source["notes"], closed, strict=True)
    }
    assert {i: loaded[i][1] for i in kinds} == kinds
    print(f"\nclosure kinds of the real files: {dict(Counter(kinds.values()).most_common())}")
    print(f"flags of the real files: {dict(Counter(f for s in expected.values() for f in s))}")
    silver_rows = real_env.delta(spark, silver.TABLE).select(
        "service_request_id", "quality_flags", "closure_kind"
    )
    assert {r[0]: (set(r[1]), r[2]) for r in silver_rows.collect()} == {
        i: (flags[i], row[1]) for i, row in loaded.items()
    }
    streamed = time.monotonic()

    # The old rule's state: closures before openings quarantined, no flags, kinds or new columns.
    gone = sorted(before)
    silver_path = real_env.settings.table_path(silver.TABLE)
    old = real_env.delta(spark, silver.TABLE).drop("quality_flags", "closure_kind")
    old = old.where(~old.service_request_id.isin(gone)).localCheckpoint()
    old.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(silver_path)
    with real_env.pg() as conn:
        conn.execute("DELETE FROM cases WHERE service_request_id = ANY(%s)", [gone])
        conn.execute("UPDATE cases SET quality_flags = '{}', closure_kind = NULL")
        conn.execute(
            "UPDATE cases SET lat = 95, long = -200 WHERE service_request_id = %s",
            [ODD_MESSAGE_ID],
        )

    registry = SchemaRegistry(real_env.settings.schema_registry_url)
    first = replay(spark, real_env.settings, registry)
    assert warehouse(real_env) == loaded
    assert real_env.delta(spark, silver.TABLE).count() == len(loaded)
    assert (first.silver_rows, first.quarantined, first.postgres_rows) == (
        len(loaded), 0, len(loaded)
    )  # fmt: skip
    second = replay(spark, real_env.settings, registry)
    assert (second.postgres_changed, second.postgres_deleted) == (0, 0)
    assert warehouse(real_env) == loaded
    print(
        f"real-file quality test: {len(loaded):,} cases streamed in {streamed - started:.0f} s,"
        f" two replays in {time.monotonic() - streamed:.0f} s"
    )
