"""Secrets the local stack generates (0600 files, 0700 folder) and the MLflow login of a client."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sf311.settings import Settings

# The read-only MLflow user the stack creates; the prediction API logs in as it.
MLFLOW_READER = "sf311-reader"


def secrets_dir(settings: Settings) -> Path:
    """Return the folder of the stack's generated secrets."""
    return settings.state_dir / "secrets"


def private_file(path: Path, text: str) -> None:
    """Write text to path readable by its owner alone, its folder closed to others too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    # Created 0600 before anything is written: no window where others could open it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def generated_secret(settings: Settings, name: str) -> str:
    """Return the secret stored under name, generating it on first use."""
    path = secrets_dir(settings) / name
    if not path.exists():
        private_file(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def mlflow_login(settings: Settings) -> tuple[str, str]:
    """Return the MLflow username and password of this process: the settings' password, else
    the one the stack generated for that user."""
    user = settings.mlflow_username
    if settings.mlflow_password is not None:
        return user, settings.mlflow_password.get_secret_value()
    return user, generated_secret(settings, f"mlflow-{user}")


def use_mlflow(settings: Settings) -> str:
    """Return the tracking URI after pointing MLflow's client at it with this process's login."""
    import mlflow

    user, password = mlflow_login(settings)
    # MLflow's REST client reads its basic-auth login from these variables on every request.
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return settings.mlflow_tracking_uri
