"""Start the Streamlit dashboard: the command line that `sf311 dashboard` runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sf311.settings import PROJECT_ROOT, Settings

APP = PROJECT_ROOT / "dashboard" / "app.py"


def command(port: int, host: str = "127.0.0.1", app: Path = APP) -> list[str]:
    """Return the `streamlit run` argv serving the dashboard on host:port, headless."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        # The map's Leaflet files are served from dashboard/static, not from a CDN.
        "--server.enableStaticServing",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def run(settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> int:
    """Replace this process with Streamlit serving the dashboard; returns only on failure.

    exec rather than a child process, so a supervisor's SIGTERM reaches Streamlit itself.
    """
    port = port or settings.dashboard_port
    print(f"dashboard on http://{host}:{port}", flush=True)
    argv = command(port, host)
    os.execve(argv[0], argv, {**os.environ, **settings.as_env()})
