"""The champion model as a service: load from MLflow, hot-swap on a new champion, predict."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sf311.credentials import use_mlflow
from sf311.model.features import record_features
from sf311.model.online import OnlineRule, Recalibration, recalibrate_from_warehouse
from sf311.model.scorer import Prediction, Scorer
from sf311.settings import Settings


@dataclass(frozen=True)
class LoadedModel:
    """A scorer with what /model reports about it."""

    scorer: Scorer
    version: str
    info: dict[str, Any] = field(default_factory=dict)
    # None until the first online recalibration: the training calibration is in use.
    recalibration: Recalibration | None = None

    def calibration_info(self) -> dict[str, Any]:
        """Return which interval calibration answers requests (training or online)."""
        if self.recalibration is None:
            return {"source": "training", "reason": "not recalibrated online yet"}
        return self.recalibration.info()


# Returns the current champion version, and loads a given version.
VersionProbe = Callable[[], str | None]
VersionLoader = Callable[[str], LoadedModel]
# Recomputes a scorer's interval calibration as of an instant (sf311.model.online).
Recalibrator = Callable[[Scorer, datetime], Recalibration]


class ModelService:
    """Holds the current model; `refresh` swaps in a new champion when the alias moved."""

    def __init__(
        self,
        model: LoadedModel | None = None,
        probe: VersionProbe | None = None,
        loader: VersionLoader | None = None,
        recalibrator: Recalibrator | None = None,
    ) -> None:
        self._model = model
        self._probe = probe
        self._loader = loader
        self._recalibrator = recalibrator
        self._lock = threading.Lock()

    @property
    def model(self) -> LoadedModel | None:
        """Return the model in service, or None before the first load."""
        return self._model

    def refresh(self) -> bool:
        """Return True when a different champion version was found and swapped in."""
        if self._probe is None or self._loader is None:
            return False
        with self._lock:
            version = self._probe()
            if version is None or (self._model and self._model.version == version):
                return False
            self._model = self._loader(version)
            return True

    def recalibrate(self, as_of: datetime) -> Recalibration | None:
        """Return the calibration now in service after recomputing it as of `as_of` (None when
        there is no model or no recalibrator). Runs off the request path: requests keep using
        the previous calibration until the new one is swapped in whole."""
        model = self._model
        if model is None or self._recalibrator is None:
            return None
        recal = self._recalibrator(model.scorer, as_of)
        with self._lock:
            # A champion swapped in meanwhile is recalibrated on the next round, not with this.
            if self._model is model:
                self._model = replace(model, recalibration=recal)
        return recal

    def predict(self, cases: list[Mapping[str, Any]]) -> tuple[LoadedModel, Prediction, list]:
        """Return the model used, its predictions, and per case the inputs training saw too
        rarely, each with what the model scored it by instead."""
        model = self._model
        if model is None:
            raise LookupError("no champion model is loaded yet")
        rows = [record_features(c) for c in cases]
        fallbacks = [model.scorer.fallbacks(row) for row in rows]
        cal = model.recalibration.calibration if model.recalibration else None
        return model, model.scorer.predict_features(rows, cal), fallbacks


def mlflow_service(settings: Settings) -> ModelService:
    """Return a ModelService that follows models:/<model_name>@champion on the MLflow server."""
    from mlflow.tracking import MlflowClient

    from sf311.model.registry import champion_version, load_scorer

    use_mlflow(settings)
    client = MlflowClient()
    name = settings.model_name

    def probe() -> str | None:
        return champion_version(client, name)

    def load(version: str) -> LoadedModel:
        with tempfile.TemporaryDirectory() as tmp:
            scorer = load_scorer(client, name, version, Path(tmp))
        run = client.get_run(scorer.spec["run_id"]) if "run_id" in scorer.spec else None
        info = {
            "name": name,
            "version": version,
            "run_id": scorer.spec.get("run_id"),
            "trained_at": scorer.spec.get("trained_at"),
            "metrics": run.data.metrics if run else scorer.spec.get("metrics", {}),
            "features": scorer.categorical + scorer.numeric,
        }
        return LoadedModel(scorer=scorer, version=version, info=info)

    return ModelService(probe=probe, loader=load, recalibrator=warehouse_recalibrator(settings))


def warehouse_recalibrator(settings: Settings) -> Recalibrator | None:
    """Return a recalibrator reading the warehouse as the analyst role, None when disabled."""
    if settings.model_online_seconds <= 0:
        return None
    rule = online_rule(settings)
    dsn = settings.analyst_dsn.get_secret_value()

    def recalibrator(scorer: Scorer, as_of: datetime) -> Recalibration:
        return recalibrate_from_warehouse(scorer, dsn, as_of, rule)

    return recalibrator


def online_rule(settings: Settings) -> OnlineRule:
    """Return the online recalibration rule configured in settings."""
    return OnlineRule(
        window_cases=settings.model_online_window,
        min_cases=settings.model_online_min_cases,
        max_age_days=settings.model_online_max_age_days,
        level=settings.model_online_level,
        out_of_sample=settings.model_online_out_of_sample,
        method=settings.model_online_method,
        min_age_days=settings.model_online_min_age_days,
        adaptive_gamma=settings.model_online_adaptive_gamma,
        adaptive_horizon=settings.model_online_adaptive_horizon,
    )
