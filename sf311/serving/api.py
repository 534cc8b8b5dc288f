"""Prediction API: resolution time of a 311 case, with an 80 % interval and the model version.

The routes only validate and call sf311.model.champion (or read one stored prediction from the
warehouse); serving/app.py is the ASGI door."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import FastAPI, HTTPException, Path, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from sf311.contract.city import LOCAL_ZONE
from sf311.model.backtest import backtest_summary
from sf311.model.champion import ModelService, mlflow_service
from sf311.model.scorer import interval_method
from sf311.serving.body import (
    MALFORMED,
    NO_MODEL,
    TOO_LARGE,
    BodyLimit,
    ErrorOut,
    invalid_request,
)
from sf311.settings import Settings
from sf311.warehouse.predictions import case_prediction

MAX_BATCH = 10_000
INTERVAL = 0.8
log = logging.getLogger(__name__)
# An ISO 8601 date-time from 2000 to 2100, calendar days only (29 February in leap years), as
# one pattern the OpenAPI document carries too: a fuzzer reads the contract the API applies.
# Pydantic alone would also take a bare date, Unix seconds, or a year its zone maths overflows.
_YEAR = "(?:20[0-9][0-9]|2100)"
_DATE = (
    f"{_YEAR}-(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    f"|{_YEAR}-(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    f"|{_YEAR}-02-(?:0[1-9]|1[0-9]|2[0-8])"
    "|20(?:[02468][048]|[13579][26])-02-29"
)
_TIME = "[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.][0-9]{1,9})?)?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?"
DATE_TIME_PATTERN = f"^(?:{_DATE}){_TIME}{_OFFSET}$"
_DATE_TIME = re.compile(DATE_TIME_PATTERN)
Text = Annotated[str | None, Field(default=None, max_length=200)]


def _json_number(value: Any) -> Any:
    """Let only JSON numbers through: pydantic would read true as 1 and "11" as 11; 11.0 stays
    accepted, as in JSON Schema (a pandas column of districts with gaps holds floats)."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise PydanticCustomError(
        "number_type", "Input should be a number, not {kind}", {"kind": type(value).__name__}
    )


Number = BeforeValidator(_json_number)


class CaseIn(BaseModel):
    """A case as known when it is opened; other fields of a full record are ignored."""

    model_config = ConfigDict(extra="ignore")

    requested_datetime: Annotated[
        datetime, WithJsonSchema({"type": "string", "pattern": DATE_TIME_PATTERN})
    ] = Field(
        description="When the case was opened: an ISO 8601 date-time from 2000 to 2100; without"
        " an offset it is San Francisco local time",
        examples=["2019-01-15T20:00:00-08:00"],
    )
    service_name: str = Field(min_length=1, max_length=200, description="Category")
    service_subtype: Text = None
    agency_responsible: Text = None
    neighborhood: Text = None
    supervisor_district: Annotated[int | None, Number] = Field(default=None, ge=0, le=99)
    police_district: Text = None
    source: Text = None
    # Strict: a JSON number, never true or "37.7"; NaN and Infinity, which Python's JSON reads,
    # are refused too.
    lat: float | None = Field(default=None, ge=-90, le=90, strict=True, allow_inf_nan=False)
    long: float | None = Field(default=None, ge=-180, le=180, strict=True, allow_inf_nan=False)

    @field_validator("requested_datetime", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        if isinstance(value, str) and _DATE_TIME.fullmatch(value):
            return value
        raise PydanticCustomError(
            "datetime_format",
            "Input should be an ISO 8601 date-time from year 2000 to 2100, such as"
            " 2019-01-15T20:00:00-08:00",
        )

    @field_validator("requested_datetime")
    @classmethod
    def _local_if_naive(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=LOCAL_ZONE)


class BatchIn(BaseModel):
    """Up to 10,000 cases scored in one call."""

    cases: list[CaseIn] = Field(min_length=1, max_length=MAX_BATCH)


class PredictionOut(BaseModel):
    """Predicted hours to close and the 80 % interval around it."""

    predicted_hours: float
    lower_hours: float
    upper_hours: float
    interval: float = INTERVAL
    model_version: str
    unseen: list[str] = Field(
        description="inputs whose value training never saw, or too rarely to learn from"
    )
    fallbacks: dict[str, str] = Field(
        default_factory=dict,
        description="per unseen input, what the model scored it by instead (its category's"
        " median, the global median, or the pooled level of rare values)",
    )


class BatchOut(BaseModel):
    """One prediction per case, in request order."""

    model_version: str
    predictions: list[PredictionOut]


class CasePredictionOut(BaseModel):
    """The stored prediction of an open case (table case_predictions) and where it stands."""

    service_request_id: int
    model_version: str
    predicted_close_at: datetime = Field(description="requested_datetime + predicted hours")
    lower_at: datetime = Field(description="lower end of the 80 % interval")
    upper_at: datetime = Field(description="upper end of the 80 % interval")
    scored_at: datetime = Field(description="when the prediction was last written")
    status: Literal["on_time", "at_risk", "overdue"] = Field(
        description="overdue: now is past upper_at; at_risk: upper_at within the next 24 h"
    )


# The largest service_request_id Postgres `cases` can hold (bigint).
MAX_CASE_ID = 2**63 - 1
NO_PREDICTION: dict[str, Any] = {
    "model": ErrorOut,
    "description": "No open case with a stored prediction has this id (unknown, closed or"
    " not scored yet)",
}
NO_WAREHOUSE: dict[str, Any] = {"model": ErrorOut, "description": "The warehouse did not answer"}


def _stored_prediction(settings: Settings, service_request_id: int) -> CasePredictionOut:
    try:
        # One connection per request, bounded by the thread pool sync routes run in.
        with psycopg.connect(
            settings.analyst_dsn.get_secret_value(),
            connect_timeout=settings.connect_timeout_seconds,
            autocommit=True,
        ) as conn:
            row = case_prediction(conn, service_request_id)
    except psycopg.OperationalError as err:
        log.warning("warehouse unreachable for a case prediction: %s", err)
        raise HTTPException(503, "warehouse unreachable: retry later") from None
    except psycopg.errors.UndefinedTable:
        raise HTTPException(
            503, "warehouse lacks case_predictions: run `sf311 db migrate`"
        ) from None
    if row is None:
        raise HTTPException(404, f"no open case {service_request_id} with a stored prediction")
    return CasePredictionOut(**row)


def _score(service: ModelService, cases: list[CaseIn]) -> list[PredictionOut]:
    try:
        model, pred, fallbacks = service.predict([c.model_dump() for c in cases])
    except LookupError as err:
        raise HTTPException(status_code=503, detail=str(err)) from None
    hours, low, high = pred.hours.tolist(), pred.lower_hours.tolist(), pred.upper_hours.tolist()
    return [
        PredictionOut(
            predicted_hours=hours[i],
            lower_hours=low[i],
            upper_hours=high[i],
            model_version=model.version,
            unseen=list(fallbacks[i]),
            fallbacks=fallbacks[i],
        )
        for i in range(len(cases))
    ]


def _json(body: BaseModel) -> Response:
    return Response(content=body.model_dump_json(), media_type="application/json")


async def _recalibrate(service: ModelService) -> None:
    try:
        recal = await run_in_threadpool(service.recalibrate, datetime.now(UTC))
    except Exception:  # a failed round must not stop the loop; the last calibration stays
        log.exception("online recalibration failed; keeping the calibration in service")
        return
    if recal is not None:
        log.info("interval calibration: %s", recal.info())


async def _follow_champion(service: ModelService, every: float, online: bool) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            swapped = await run_in_threadpool(service.refresh)
        except Exception:  # the registry being briefly down must not stop the poller
            log.exception("champion check failed; keeping version in service")
            continue
        if swapped and service.model is not None:
            log.info("now serving model version %s", service.model.version)
            if online:
                await _recalibrate(service)


async def _follow_closures(service: ModelService, every: float) -> None:
    while True:
        await _recalibrate(service)
        await asyncio.sleep(every)


def create_app(settings: Settings, service: ModelService | None = None) -> FastAPI:
    """Return the prediction API; without `service` it follows the MLflow champion."""
    service = service or mlflow_service(settings)
    backtest = backtest_summary(settings.model_backtest_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(service.refresh)
        except Exception:
            log.exception("no champion loaded at start; will keep checking")
        online = settings.model_online_seconds > 0
        tasks = [
            asyncio.create_task(_follow_champion(service, settings.model_poll_seconds, online))
        ]
        if online:
            tasks.append(
                asyncio.create_task(_follow_closures(service, settings.model_online_seconds))
            )
        yield
        for task in tasks:
            task.cancel()

    # sf311 exports no OpenTelemetry; left on, FastAPI probes the providers on every request.
    app = FastAPI(
        title="sf311 resolution-time API",
        version="1",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    app.add_middleware(BodyLimit)
    app.exception_handler(RequestValidationError)(invalid_request)
    posted: dict[int | str, dict[str, Any]] = {400: MALFORMED, 413: TOO_LARGE, 503: NO_MODEL}

    # Answers are serialized once by pydantic; returning a Response skips FastAPI's second pass.
    @app.post("/predict", response_model=PredictionOut, responses=posted)
    async def predict(case: CaseIn) -> Response:
        return _json(_score(service, [case])[0])

    @app.post("/predict/batch", response_model=BatchOut, responses=posted)
    def predict_batch(batch: BatchIn) -> Response:
        predictions = _score(service, batch.cases)
        return _json(BatchOut(model_version=predictions[0].model_version, predictions=predictions))

    @app.get(
        "/cases/{service_request_id}/prediction",
        response_model=CasePredictionOut,
        responses={404: NO_PREDICTION, 503: NO_WAREHOUSE},
    )
    def stored_prediction(
        service_request_id: Annotated[int, Path(ge=0, le=MAX_CASE_ID)],
    ) -> Response:
        return _json(_stored_prediction(settings, service_request_id))

    @app.get("/health", responses={503: NO_MODEL})
    async def health() -> dict[str, Any]:
        model = service.model
        if model is None:
            raise HTTPException(status_code=503, detail="no champion model loaded")
        return {"status": "ok", "model_version": model.version}

    @app.get("/model", responses={503: NO_MODEL})
    async def model_info() -> dict[str, Any]:
        model = service.model
        if model is None:
            raise HTTPException(status_code=503, detail="no champion model loaded")
        return {
            "version": model.version,
            **model.info,
            "interval_method": interval_method(model.scorer.calibration),
            "calibration": model.calibration_info(),
            "backtest": backtest,
        }

    return app


def serve(settings: Settings) -> int:
    """Run the API under uvicorn on settings.api_host:api_port until stopped; return 0."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port)
    return 0
