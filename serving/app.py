"""ASGI door of the prediction API: `uvicorn --factory serving.app:create` or `sf311 serve`."""

from __future__ import annotations

from fastapi import FastAPI

from sf311.serving.api import create_app
from sf311.settings import load_settings


def create() -> FastAPI:
    """Return the prediction API configured from the environment (SF311_ settings)."""
    return create_app(load_settings())
