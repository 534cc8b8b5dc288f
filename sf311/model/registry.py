"""MLflow logging and registration of a trained model, and the champion alias decision."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from sf311.credentials import use_mlflow
from sf311.model.export import export_pipeline
from sf311.model.features import LABEL
from sf311.model.levels import CATEGORY, SUBTYPE
from sf311.model.scorer import Scorer
from sf311.model.train import TrainConfig, TrainResult
from sf311.settings import Settings

ALIAS = "champion"
SCORER_PATH = "scorer"
SPARK_MODEL_PATH = "spark-model"
# Requirements written by hand: MLflow's inference of them slows every log.
PIP_REQUIREMENTS = ["pyspark==4.2.0", "mlflow==3.17.2", "pandas<3", "numpy"]


@dataclass(frozen=True)
class Decision:
    """Outcome of one registration: the new version, both holdout figures, the alias move."""

    version: str
    run_id: str
    challenger_mae_log: float
    champion_version: str | None
    champion_mae_log: float | None
    promoted: bool

    def as_dict(self) -> dict[str, Any]:
        """Return the decision as a JSON-ready dict."""
        return dict(self.__dict__)


def champion_version(client: MlflowClient, name: str) -> str | None:
    """Return the version the champion alias points at, or None when there is none."""
    try:
        return str(client.get_model_version_by_alias(name, ALIAS).version)
    except MlflowException:
        return None


def load_scorer(client: MlflowClient, name: str, version: str, folder: Path) -> Scorer:
    """Return the JVM-free scorer logged beside model version `version`."""
    run_id = client.get_model_version(name, version).run_id
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=SCORER_PATH, dst_path=str(folder)
    )
    return Scorer.load(Path(local))


def holdout_mae(scorer: Scorer, holdout: pd.DataFrame) -> float:
    """Return a scorer's MAE in log space on a holdout frame carrying the feature columns."""
    rows = holdout.to_dict("records")
    pred = scorer.predict_features(rows).log_hours
    return float(np.mean(np.abs(pred - holdout[LABEL].to_numpy())))


def log_and_register(settings: Settings, result: TrainResult, cfg: TrainConfig) -> Decision:
    """Return the registration decision after logging the run and moving the alias if earned."""
    use_mlflow(settings)
    mlflow.set_experiment(settings.model_name)
    client = MlflowClient()
    # The levels stage reads the subtype, no forest feature: the example carries it.
    inputs = list(dict.fromkeys([CATEGORY, SUBTYPE, *cfg.categorical, *cfg.numeric]))
    example = result.holdout[inputs].head(5)
    signature = infer_signature(example, result.holdout["raw"].head(5).to_numpy())
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(cfg.params())
        mlflow.log_metrics(result.metrics)
        mlflow.log_metrics({f"count_{k}": float(v) for k, v in result.counts.items()})
        info = mlflow.spark.log_model(
            result.model,
            SPARK_MODEL_PATH,
            signature=signature,
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=settings.model_name,
        )
        version = str(info.registered_model_version)
        scorer_dir = export_pipeline(
            result.model,
            result.calibration,
            Path(tmp) / SCORER_PATH,
            scale=result.scale,
            model_version=version,
            run_id=run.info.run_id,
            metrics=result.metrics,
            trained_at=pd.Timestamp.now(tz="UTC").isoformat(),
            # Cases requested from here on are out of sample: online recalibration uses them.
            data_end=cfg.test_start.isoformat(),
        )
        mlflow.log_artifacts(str(scorer_dir), SCORER_PATH)
        decision = _decide(client, settings.model_name, version, run.info.run_id, result, tmp)
        mlflow.log_metrics(
            {
                "challenger_mae_log": decision.challenger_mae_log,
                **(
                    {"champion_mae_log": decision.champion_mae_log}
                    if decision.champion_mae_log is not None
                    else {}
                ),
            }
        )
        mlflow.set_tag("champion_decision", "promoted" if decision.promoted else "kept")
        mlflow.log_text(json.dumps(decision.as_dict(), indent=1), "champion_decision.json")
    return decision


def _decide(
    client: MlflowClient, name: str, version: str, run_id: str, result: TrainResult, tmp: str
) -> Decision:
    challenger = float(result.metrics["mae_log"])
    current = champion_version(client, name)
    current_mae = None
    if current is not None:
        champion = load_scorer(client, name, current, Path(tmp) / "champion")
        current_mae = holdout_mae(champion, result.holdout)
    promoted = current_mae is None or challenger < current_mae
    if promoted:
        client.set_registered_model_alias(name, ALIAS, version)
    client.set_model_version_tag(name, version, "holdout_mae_log", f"{challenger:.6f}")
    return Decision(version, run_id, challenger, current, current_mae, promoted)
