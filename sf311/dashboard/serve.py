"""Start the Streamlit dashboard: the command line that `sf311 dashboard` runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
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


@contextlib.contextmanager
def serving(
    env: Mapping[str, str],
    port: int,
    log: Path | None = None,
    timeout: float = 60.0,
    app: Path = APP,
) -> Iterator[str]:
    """Yield the URL of a child `streamlit run` serving the dashboard once it answers health.

    The child gets `env` as its whole environment and writes to `log` (else nowhere); it is
    stopped on exit. Raises RuntimeError, with the log's tail, when it does not come up.
    """
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w")) if log else subprocess.DEVNULL
        server = subprocess.Popen(command(port, app=app), env=dict(env), stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).close()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text()[-2000:] if log else ""
                        raise RuntimeError(f"streamlit did not start: {tail}") from None
                    time.sleep(0.3)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=20)
