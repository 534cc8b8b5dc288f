"""The prediction API: FastAPI routes over the champion model."""
