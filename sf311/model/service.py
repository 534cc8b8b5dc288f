"""The champion model as a service: load from MLflow, hot-swap on a new champion, predict."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sf311.model.features import record_features
from sf311.model.scorer import Prediction, Scorer
from sf311.settings import Settings


@dataclass(frozen=True)
class LoadedModel:
    """A scorer with what /model reports about it."""

    scorer: Scorer
    version: str
    info: dict[str, Any] = field(default_factory=dict)


# Returns the current champion version, and loads a given version.
VersionProbe = Callable[[], str | None]
VersionLoader = Callable[[str], LoadedModel]


class ModelService:
    """Holds the current model; `refresh` swaps in a new champion when the alias moved."""

    def __init__(
        self,
        model: LoadedModel | None = None,
        probe: VersionProbe | None = None,
        loader: VersionLoader | None = None,
    ) -> None:
        self._model = model
        self._probe = probe
        self._loader = loader
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

    def predict(self, cases: list[Mapping[str, Any]]) -> tuple[LoadedModel, Prediction, list]:
        """Return the model used, its predictions, and per case the features it had not seen."""
        model = self._model
        if model is None:
            raise LookupError("no champion model is loaded yet")
        rows = [record_features(c) for c in cases]
        unseen = [model.scorer.unseen(row) for row in rows]
        return model, model.scorer.predict_features(rows), unseen


def mlflow_service(settings: Settings) -> ModelService:
    """Return a ModelService that follows models:/<model_name>@champion on the MLflow server."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from sf311.model.registry import champion_version, load_scorer

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
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

    return ModelService(probe=probe, loader=load)
