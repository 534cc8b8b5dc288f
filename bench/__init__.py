"""Benchmarks: run each as `.venv/bin/python -m bench.<name>` from the repository root."""
