"""Headless Chromium over the DevTools protocol (python `websockets`, no Node): load dashboard
pages, read what they drew, click, screenshot; for the end-to-end test and the benchmark."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)

# Counts what the dashboard drew: Vega-Lite charts and their marks (lines, bars, slices), data
# tables (drawn on a canvas), and inside the map's iframe Leaflet's vector layers, marker
# clusters and heatmap.
PAGE_STATE = """(() => {
  const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')];
  const marks = charts.map(c => c.querySelectorAll('.role-mark > [role="graphics-symbol"]').length);
  // Vega draws a view's axes and marks in one pass: a rendered SVG is the chart drawn, data or not.
  const drawn = charts.filter(c => c.querySelector('svg.marks')).length;
  const state = {charts: charts.length, chartMarks: marks, chartsDrawn: drawn, metrics: [],
                 leaflet: null,
                 tables: document.querySelectorAll('[data-testid="stDataFrame"] canvas').length,
                 running: !!document.querySelector('[data-testid="stStatusWidget"]'),
                 exceptions: document.querySelectorAll('[data-testid="stException"]').length};
  state.location = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .map(e => e.innerText).find(t => t.startsWith('Location:')) || null;
  document.querySelectorAll('[data-testid="stMetricValue"]').forEach(
    m => state.metrics.push(m.innerText));
  for (const frame of document.querySelectorAll('iframe')) {
    let doc = null;
    try { doc = frame.contentDocument; } catch (e) { continue; }
    if (!doc || !doc.querySelector('.leaflet-container')) continue;
    state.leaflet = {
      vectors: doc.querySelectorAll('path.leaflet-interactive').length,
      clusters: doc.querySelectorAll('.marker-cluster').length,
      heat: doc.querySelectorAll('canvas.leaflet-heatmap-layer').length,
      layers: doc.querySelectorAll('.leaflet-control-layers-selector').length,
    };
  }
  return state;
})()"""


class BrowserError(RuntimeError):
    """Chromium did not start, or a page did not reach the awaited state in time."""


class Chromium:
    """One headless Chromium process with a fresh profile, driven over one DevTools socket."""

    def __init__(self, binary: Path = CHROMIUM, width: int = 1500, height: int = 1800) -> None:
        if not binary.exists():
            raise BrowserError(f"{binary} not found: `apt-get install -y chromium`")
        self.profile = Path(tempfile.mkdtemp(prefix="sf311-chromium-"))
        self.process = subprocess.Popen(
            [
                str(binary),
                *FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._id = 0
        self._stack = ExitStack()
        try:
            port = self._devtools_port(timeout=30)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            page = next(t for t in targets if t["type"] == "page")
            self.socket = self._stack.enter_context(
                connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            )
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise BrowserError("chromium did not open its DevTools port")

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the result of one DevTools command, skipping the events in between."""
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message["result"]

    def navigate(self, url: str) -> None:
        """Open `url` in the page (returns once navigation starts, not when it has drawn)."""
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """Return the JSON value of a JavaScript expression evaluated in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})[
            "result"
        ]
        return result.get("value")

    def wait_for(self, predicate, timeout: float = 60.0, poll: float = 0.25) -> dict[str, Any]:
        """Return the page state (PAGE_STATE) once `predicate(state)` holds; raise on timeout."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.evaluate(PAGE_STATE) or {}
            if predicate(state):
                return state
            time.sleep(poll)
        raise BrowserError(f"page did not reach the awaited state in {timeout:.0f} s: {state}")

    def click_map(self, x_share: float, y_share: float) -> None:
        """Click the page's Leaflet map at a point given as shares of its width and height."""
        box = self.evaluate(
            """(() => {
              for (const frame of document.querySelectorAll('iframe')) {
                let doc = null;
                try { doc = frame.contentDocument; } catch (e) { continue; }
                if (!doc || !doc.querySelector('.leaflet-container')) continue;
                const r = frame.getBoundingClientRect();
                return {x: r.x, y: r.y, w: r.width, h: r.height};
              }
              return null;
            })()"""
        )
        if not box:
            raise BrowserError("no Leaflet map on the page")
        x, y = box["x"] + box["w"] * x_share, box["y"] + box["h"] * y_share
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page to `path` and return it."""
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        """Stop this Chromium process and delete its profile."""
        self._stack.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
