"""case_predictions kept by the streaming job with a champion registered in MLflow: open cases
scored as they land, closed ones removed, a new champion rescoring every open case (at the next
batch, or between batches while the job streams), and the API answering with the stored
prediction."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from stream_support import T0, with_search_path

from sf311.credentials import use_mlflow
from sf311.lakehouse.stream import run_stream, start_stream
from sf311.model.champion import LoadedModel, ModelService
from sf311.model.columns import INPUT_COLUMNS
from sf311.model.export import flatten_trees
from sf311.model.predictions import CasePredictionSink
from sf311.model.registry import ALIAS, SCORER_PATH
from sf311.model.scorer import SPEC_FILE, TREES_FILE, Scorer
from sf311.serving.api import create_app

pytestmark = pytest.mark.integration

FIRST_ID = 7_000_000
NAMES = ["Graffiti", "Encampments"]


def _export(folder: Path, graffiti: float, other: float) -> Scorer:
    """Return the one-split scorer written to `folder` as sf311.model.export writes one:
    Graffiti -> `graffiti`, anything else -> `other` (log1p hours), interval +/- 1."""

    def node(i: int, value: float, left: int = -1, right: int = -1, feature: int = -1,
             split: list[float] | None = None, categories: int = -1) -> dict[str, Any]:  # fmt: skip
        return {"treeID": 0, "nodeData": {
            "id": i, "prediction": value, "leftChild": left, "rightChild": right,
            "split": {"featureIndex": feature, "leftCategoriesOrThreshold": split or [],
                      "numCategories": categories}}}  # fmt: skip

    nodes = [node(0, 0.0, 1, 2, 0, [0.0], len(NAMES) + 1), node(1, graffiti), node(2, other)]
    spec = {
        "categorical": ["service_name"],
        "numeric": ["hour"],
        "labels": {"service_name": NAMES},
        "combine": "sum",
        "calibration": {"group_column": "service_name", "coverage": 0.8,
                        "global": [-1.0, 0.0, 1.0], "groups": {}},
    }  # fmt: skip
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(json.dumps(spec))
    np.savez(folder / TREES_FILE, **flatten_trees(nodes, {0: 1.0}))
    return Scorer.load(folder)


def _register_champion(settings, folder: Path) -> str:
    """Return the model version of `folder` registered in MLflow and made the champion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    use_mlflow(settings)
    client = MlflowClient()
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), SCORER_PATH)
    if not client.search_registered_models(f"name = '{settings.model_name}'"):
        client.create_registered_model(settings.model_name)
    source = f"runs:/{run.info.run_id}/{SCORER_PATH}"
    version = client.create_model_version(settings.model_name, source, run_id=run.info.run_id)
    client.set_registered_model_alias(settings.model_name, ALIAS, version.version)
    return str(version.version)


def _case(n: int, closed: bool, step: int = 0) -> dict[str, Any]:
    sid = FIRST_ID + n
    requested = T0 + timedelta(hours=n)
    return {
        "service_request_id": sid,
        "requested_datetime": requested,
        "updated_datetime": requested + timedelta(hours=1, seconds=step),
        "closed_date": requested + timedelta(hours=1) if closed else None,
        "status_description": "Closed" if closed else "Open",
        "service_name": NAMES[n // 2 % 2],
        "neighborhood": "Mission",
    }


def _stored(env) -> dict[int, tuple]:
    with env.pg() as conn:
        rows = conn.execute(
            "SELECT service_request_id, model_version, predicted_close_at, lower_at, upper_at"
            " FROM case_predictions"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _expected(env, scorer: Scorer, version: str, ids: list[int]) -> dict[int, tuple]:
    """Return the scorer's own predictions of the cases as Postgres holds them."""
    columns = ", ".join(INPUT_COLUMNS)
    with env.pg() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cases = cur.execute(
            f"SELECT service_request_id, {columns} FROM cases WHERE service_request_id = ANY(%s)"
            " ORDER BY 1",
            [ids],
        ).fetchall()
    pred = scorer.predict(cases)
    out = {}
    for i, case in enumerate(cases):
        at = case["requested_datetime"]
        hours = (pred.hours[i], pred.lower_hours[i], pred.upper_hours[i])
        out[case["service_request_id"]] = (version, *(at + timedelta(hours=h) for h in hours))
    return out


def _assert_equal(stored: dict[int, tuple], expected: dict[int, tuple]) -> None:
    assert set(stored) == set(expected)
    for sid, want in expected.items():
        got = stored[sid]
        assert got[0] == want[0], sid
        for g, w in zip(got[1:], want[1:], strict=True):
            assert abs(g - w) < timedelta(milliseconds=1), (sid, g, w)


def _caught_up(query) -> bool:
    progress = query.recentProgress
    return bool(progress) and progress[-1].numInputRows == 0


def _until(done, job: threading.Thread, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert job.is_alive(), f"the job stopped before it {what}"
        assert time.monotonic() < deadline, f"not {what} in {seconds:.0f} s"
        time.sleep(0.5)


def test_open_cases_are_scored_closed_ones_leave_and_a_new_champion_rescores(
    spark, stream_env, tmp_path
) -> None:
    from mlflow.tracking import MlflowClient

    settings = stream_env.settings.model_copy(
        update={"model_name": f"sf311-predictions-test-{uuid.uuid4().hex[:8]}",
                "predictions_check_seconds": 0.01}
    )  # fmt: skip
    first = _export(tmp_path / "v1", graffiti=2.0, other=3.0)
    v1 = _register_champion(settings, tmp_path / "v1")
    sinks = (CasePredictionSink,)
    try:
        # Six cases, the odd ones closed.
        stream_env.produce_cases([_case(n, closed=n % 2 == 1) for n in range(6)])
        run_stream(spark, settings, once=True, extra_sinks=sinks)
        open_ids = [FIRST_ID + n for n in (0, 2, 4)]
        _assert_equal(_stored(stream_env), _expected(stream_env, first, v1, open_ids))

        # A later batch closes case 2 and opens case 6, under a new champion: case 2 leaves as
        # the batch's upsert closes it (trigger on `cases`), the sink rescores every open case.
        second = _export(tmp_path / "v2", graffiti=1.0, other=4.5)
        v2 = _register_champion(settings, tmp_path / "v2")
        assert v2 != v1
        stream_env.produce_cases([_case(2, closed=True, step=5), _case(6, closed=False)])
        run_stream(spark, settings, once=True, extra_sinks=sinks)
        open_ids = [FIRST_ID + n for n in (0, 4, 6)]
        _assert_equal(_stored(stream_env), _expected(stream_env, second, v2, open_ids))

        # Streaming with nothing to read, a third champion still rescores every open case: the
        # driver checks the alias between batches.
        third = _export(tmp_path / "v3", graffiti=0.5, other=2.5)
        streams = start_stream(spark, settings, extra_sinks=sinks)
        waiting = threading.Thread(target=streams.wait, args=(False,), daemon=True)
        waiting.start()
        try:
            # The warehouse query first reloads what the bounded runs' lake query loaded.
            _until(lambda: all(_caught_up(q) for q in streams.queries), waiting, "caught up")
            last = {q.name: q.recentProgress[-1].batchId for q in streams.queries}
            v3 = _register_champion(settings, tmp_path / "v3")
            _until(lambda: {v[0] for v in _stored(stream_env).values()} == {v3}, waiting,
                   "rescored")  # fmt: skip
        finally:
            streams.stop()
            waiting.join(timeout=60)
        _assert_equal(_stored(stream_env), _expected(stream_env, third, v3, open_ids))
        assert not [p for q in streams.queries for p in q.recentProgress
                    if p.batchId > last[q.name] and p.numInputRows > 0]  # fmt: skip

        schema = settings.postgres_dsn.get_secret_value().rsplit("search_path%3D", 1)[1]
        with stream_env.pg() as conn:
            conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO analyst")
        analyst = with_search_path(settings.analyst_dsn.get_secret_value(), schema)
        local = settings.model_copy(update={"analyst_dsn": SecretStr(analyst)})
        service = ModelService(LoadedModel(third, v3))
        with TestClient(create_app(local, service)) as api:
            body = api.get(f"/cases/{FIRST_ID + 4}/prediction").json()
            want = _expected(stream_env, third, v3, [FIRST_ID + 4])[FIRST_ID + 4]
            assert body["model_version"] == v3
            # Opened in 2019 and predicted to close within days: long overdue.
            assert body["status"] == "overdue"
            got = [datetime.fromisoformat(body[k]) for k in ("predicted_close_at", "lower_at",
                                                             "upper_at")]  # fmt: skip
            for g, w in zip(got, want[1:], strict=True):
                assert abs(g - w) < timedelta(milliseconds=1)
            for closed in (FIRST_ID + 2, FIRST_ID + 3, FIRST_ID + 99):
                assert api.get(f"/cases/{closed}/prediction").status_code == 404
    finally:
        MlflowClient().delete_registered_model(settings.model_name)
