"""Client of the prediction API, tolerant of its being down or slightly different."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from sf311.model.columns import INPUT_COLUMNS

_HOURS_KEYS = ("predicted_hours", "hours", "prediction")
_LOWER_KEYS = ("lower_hours", "interval_lower", "p10_hours", "lower")
_UPPER_KEYS = ("upper_hours", "interval_upper", "p90_hours", "upper")
_VERSION_KEYS = ("model_version", "version")


class ApiUnavailable(RuntimeError):
    """The prediction API cannot be reached, timed out, or has no model loaded."""


class ApiError(RuntimeError):
    """The prediction API answered, but not with a prediction (bad request or payload)."""


@dataclass(frozen=True)
class Prediction:
    """Predicted resolution hours with an 80% interval and the model version behind it.

    `unseen` names the case's features whose value the model never saw in training.
    """

    hours: float
    lower: float | None
    upper: float | None
    model_version: str | None
    unseen: tuple[str, ...] = ()


def case_payload(case: Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON body of one case: the model's input fields, timestamps as ISO text."""
    body: dict[str, Any] = {}
    for name in INPUT_COLUMNS:  # the fields the model reads; others are not sent
        value: Any = case.get(name)
        if hasattr(value, "to_pydatetime"):
            value = value.to_pydatetime()
        if isinstance(value, datetime):
            value = value.isoformat()
        elif hasattr(value, "item"):
            value = value.item()
        if value is not None and value == value:  # NaN from pandas means missing
            body[name] = value
    return body


def _first(obj: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((obj[k] for k in keys if obj.get(k) is not None), None)


def parse_prediction(obj: Mapping[str, Any]) -> Prediction:
    """Return the Prediction in one answer object, or raise ApiError when it holds none."""
    hours = _first(obj, _HOURS_KEYS)
    if not isinstance(hours, int | float):
        raise ApiError(f"prediction API answered without predicted hours: {dict(obj)}")
    lower, upper = _first(obj, _LOWER_KEYS), _first(obj, _UPPER_KEYS)
    interval = obj.get("interval")
    if isinstance(interval, Sequence) and not isinstance(interval, str) and len(interval) == 2:
        lower, upper = interval
    elif isinstance(interval, Mapping):
        lower, upper = _first(interval, _LOWER_KEYS), _first(interval, _UPPER_KEYS)
    version = _first(obj, _VERSION_KEYS)
    return Prediction(
        hours=float(hours),
        lower=None if lower is None else float(lower),
        upper=None if upper is None else float(upper),
        model_version=None if version is None else str(version),
        unseen=tuple(str(u) for u in obj.get("unseen") or ()),
    )


def _post(url: str, body: Any, timeout: float) -> Any:
    try:
        answer = requests.post(url, json=body, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as err:
        raise ApiUnavailable(
            f"prediction API not reachable at {url} ({type(err).__name__})"
        ) from None
    if answer.status_code in (502, 503, 504):
        raise ApiUnavailable(f"prediction API at {url} is not ready ({answer.status_code})")
    if answer.status_code >= 400:
        raise ApiError(f"prediction API answered {answer.status_code}: {answer.text[:300]}")
    try:
        return answer.json()
    except ValueError:
        raise ApiError(f"prediction API answered non-JSON: {answer.text[:300]}") from None


def predict(api_url: str, case: Mapping[str, Any], timeout: float = 5.0) -> Prediction:
    """Return the API's prediction for one case (POST /predict)."""
    answer = _post(f"{api_url.rstrip('/')}/predict", case_payload(case), timeout)
    if not isinstance(answer, Mapping):
        raise ApiError(f"prediction API answered {type(answer).__name__}, not an object")
    return parse_prediction(answer)


def predict_batch(
    api_url: str, cases: Sequence[Mapping[str, Any]], timeout: float = 10.0
) -> list[Prediction]:
    """Return the API's predictions for many cases in one call (POST /predict/batch)."""
    if not cases:
        return []
    body = {"cases": [case_payload(c) for c in cases]}
    answer = _post(f"{api_url.rstrip('/')}/predict/batch", body, timeout)
    items = answer.get("predictions") if isinstance(answer, Mapping) else answer
    if not isinstance(items, list) or len(items) != len(cases):
        raise ApiError("prediction API batch answer does not hold one prediction per case")
    return [parse_prediction(item) for item in items]
