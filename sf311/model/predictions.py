"""Postgres `case_predictions` kept by the champion: each open case of a micro-batch scored as
it lands, closed ones removed, every open case rescored when the champion changes
(CasePredictionSink in the streaming job and replay; `sf311 score`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pyarrow.compute as pc
from pyspark.sql import SparkSession

from sf311.errors import UserError, first_line
from sf311.lakehouse.batch import Batch, Rebuild
from sf311.lakehouse.sinks import BatchSink, Sink, utc_now
from sf311.model.champion import LoadedModel, ModelService, mlflow_service
from sf311.model.columns import INPUT_COLUMNS
from sf311.settings import Settings
from sf311.warehouse import predictions as store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreCounts:
    """What one pass over case_predictions did."""

    model_version: str | None
    scored: int = 0
    written: int = 0
    deleted: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """Return the counts as one line for a terminal."""
        rate = self.scored / self.seconds if self.seconds else 0.0
        return (
            f"model {self.model_version}: {self.scored} open cases scored, {self.written} rows"
            f" written, {self.deleted} deleted in {self.seconds:.1f} s ({rate:,.0f} cases/s)"
        )


def prediction_rows(
    model: LoadedModel, cases: Sequence[dict[str, Any]], service: ModelService
) -> list[store.PredictionRow]:
    """Return (id, version, predicted close, interval low, interval high) of each case: its
    requested_datetime plus the predicted hours."""
    if not cases:
        return []
    _, pred, _ = service.predict(list(cases))
    out = []
    for case, hours, low, high in zip(
        cases, pred.hours.tolist(), pred.lower_hours.tolist(), pred.upper_hours.tolist(),
        strict=True,
    ):  # fmt: skip
        at = case["requested_datetime"]
        out.append(
            (
                case["service_request_id"],
                model.version,
                at + timedelta(hours=hours),
                at + timedelta(hours=low),
                at + timedelta(hours=high),
            )
        )
    return out


class CasePredictions:
    """Keeps case_predictions equal to the champion's predictions of the open cases."""

    def __init__(
        self,
        dsn: str,
        service: ModelService,
        slice_rows: int,
        check_seconds: float,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dsn = dsn
        self.service = service
        self.slice_rows = slice_rows
        self.check_seconds = check_seconds
        self.clock = clock
        self.monotonic = monotonic
        self._next_check = float("-inf")
        # The version every open case is known to be scored by; None until checked.
        self._settled: str | None = None
        self._warned = False

    def model(self) -> LoadedModel | None:
        """Return the champion in service, logging once while there is none."""
        model = self.service.model
        if model is None and not self._warned:
            log.warning("no champion model registered: case_predictions is not written until "
                        "one is (`sf311 train`)")  # fmt: skip
            self._warned = True
        return model

    def refresh(self) -> bool:
        """Return True when a check was due (at most every check_seconds): the champion is
        swapped in if the alias moved; a failed check keeps the model in service."""
        now = self.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.check_seconds
        try:
            self.service.refresh()
        except Exception as err:  # noqa: BLE001 - the registry down must not stop the stream
            log.warning("champion check failed (%s); keeping the model in service", err)
        return True

    def catch_up(self) -> ScoreCounts | None:
        """Return the counts of a full rescore when some open case lacks its prediction by the
        champion in service, checked once per champion (and after a restart); else None."""
        model = self.model()
        if model is None or model.version == self._settled:
            return None
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            behind = store.unscored_by(conn, model.version)
        if not behind:
            self._settled = model.version
            return None
        return self.rescore_all()

    def update(self, ids: Sequence[int]) -> ScoreCounts:
        """Return the counts after scoring the open cases among `ids` as Postgres `cases` now
        holds them and deleting the predictions of the others."""
        t0 = time.monotonic()
        model = self.model()
        if model is None:
            return ScoreCounts(None)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cases = store.open_cases(conn, ids, INPUT_COLUMNS)
            rows = prediction_rows(model, cases, self.service)
            still_open = {c["service_request_id"] for c in cases}
            with conn.transaction():
                written = store.upsert_predictions(conn, rows, self.clock())
                deleted = store.delete_predictions(conn, [i for i in ids if i not in still_open])
        return ScoreCounts(model.version, len(rows), written, deleted,
                           round(time.monotonic() - t0, 3))  # fmt: skip

    def rescore_all(self) -> ScoreCounts:
        """Return the counts after scoring every open case, slice by slice, and deleting the
        predictions of cases no longer open."""
        t0 = time.monotonic()
        model = self.model()
        if model is None:
            return ScoreCounts(None)
        scored = written = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for cases in store.open_case_slices(conn, INPUT_COLUMNS, self.slice_rows):
                rows = prediction_rows(model, cases, self.service)
                with conn.transaction():
                    written += store.upsert_predictions(conn, rows, self.clock())
                scored += len(rows)
            # Trigger, cascade and row locks leave no closed case's row: kept as a repair pass.
            with conn.transaction():
                deleted = store.delete_not_open(conn)
        self._settled = model.version
        counts = ScoreCounts(model.version, scored, written, deleted,
                             round(time.monotonic() - t0, 3))  # fmt: skip
        log.info("case_predictions rescored: %s", counts.summary())
        return counts


def case_predictions(settings: Settings, service: ModelService | None = None) -> CasePredictions:
    """Return the case_predictions keeper of the warehouse, following the MLflow champion
    unless given a service."""
    return CasePredictions(
        settings.postgres_dsn.get_secret_value(),
        service or mlflow_service(settings),
        slice_rows=settings.predictions_slice_rows,
        check_seconds=settings.predictions_check_seconds,
    )


class CasePredictionSink(BatchSink):
    """Postgres `case_predictions`, written after WarehouseSink has upserted the batch's cases."""

    name = "predictions"
    collected = True

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        keeper: CasePredictions | None = None,
    ) -> None:
        super().__init__(spark, settings, clock)
        self.keeper = keeper or case_predictions(settings)
        # write() runs on the query's thread, idle() on the driver's: one keeper at a time.
        self._busy = threading.Lock()

    def takes(self, batch: Batch) -> bool:
        """Return True when the batch holds cases for the warehouse."""
        return batch.rows is not None and batch.rows.newest.num_rows > 0

    def write(self, batch: Batch) -> None:
        """Score the batch's open cases, then rescore every open case if the champion changed.

        Only the cases whose version in the batch is open can have become open in `cases`; a
        closed version that replaced an open one lost its prediction by the trigger on `cases`
        (migration 0015), and one that did not replace the stored version changed nothing.
        A backfill batch's cases are mostly closed: they are not sent to Postgres."""
        assert batch.rows is not None, "takes() lets only collected batches through"
        newest = batch.rows.newest
        ids = newest.filter(pc.is_null(newest["closed_date"]))["service_request_id"].to_pylist()
        with self._busy:
            self.keeper.refresh()
            # The batch first: its cases, already in `cases`, need not make a restart rescore.
            counts = self.keeper.update(ids)
            self.keeper.catch_up()
        log.info(
            "predictions batch %d: %d open cases scored, %d rows written, %d deleted",
            batch.batch_id, counts.scored, counts.written, counts.deleted,
            extra={"query": batch.query_name, "batch_id": batch.batch_id,
                   "predictions_seconds": counts.seconds},
        )  # fmt: skip

    def idle(self) -> None:
        """Between batches, at most every check_seconds: rescore every open case when the
        champion changed (cases closed or deleted meanwhile lost their rows as `cases` changed).
        A batch being written, or Postgres down, leaves it to the next call or batch."""
        if not self._busy.acquire(blocking=False):
            return
        try:
            if self.keeper.refresh():
                self.keeper.catch_up()
        except psycopg.Error as err:
            log.warning("case_predictions not checked between batches (%s)", first_line(err))
        finally:
            self._busy.release()

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Rescore every open case of the rebuilt `cases`; return no counts (logged instead)."""
        self.keeper.rescore_all()
        return {}


class OverdueHistorySink(Sink):
    """Table overdue_history: the open cases' statuses recorded every overdue_history_seconds
    while the job streams (cases turn overdue as time passes, batch or none), once at the end
    of a bounded run and after a replay. A failed record is logged and left to the next."""

    name = "overdue_history"

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spark, settings, clock)
        self.monotonic = monotonic
        self._due = float("-inf")

    def record(self) -> None:
        """Record today's statuses per category now."""
        try:
            with psycopg.connect(self.settings.postgres_dsn.get_secret_value()) as conn:
                categories = store.record_statuses(conn)
        except psycopg.Error as err:
            log.warning("overdue_history not recorded (%s)", first_line(err))
            return
        log.info("overdue_history: statuses of %d categories recorded", categories)

    def idle(self) -> None:
        """Record when overdue_history_seconds have passed since the last record began."""
        if self.monotonic() < self._due:
            return
        self._due = self.monotonic() + self.settings.overdue_history_seconds
        self.record()

    def finish(self) -> None:
        """Record once, after a bounded run's last batch."""
        self.record()

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Record today's statuses of the rescored cases; return no counts (the days before
        are a record of what was, which nothing rebuilds)."""
        self.record()
        return {}


def score_open_cases(settings: Settings) -> ScoreCounts:
    """Return the counts after rescoring every open case with the MLflow champion now."""
    keeper = case_predictions(settings)
    keeper.service.refresh()
    if keeper.service.model is None:
        raise UserError(f"no champion model {settings.model_name!r} in MLflow: train one "
                        "(`sf311 train`) or fix SF311_MODEL_NAME")  # fmt: skip
    return keeper.rescore_all()
