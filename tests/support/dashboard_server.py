"""A child `streamlit run` serving the dashboard, for the end-to-end test and the benchmark."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from sf311.dashboard.serve import APP, command


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
