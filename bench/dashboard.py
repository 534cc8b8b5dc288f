"""Dashboard render times with N synthetic cases in Postgres (targets: first render <= 2 s,
filter change <= 1 s).

    .venv/bin/python bench/dashboard.py --rows 1000000

Needs the stack (`make up`) and, for the browser figures, Debian's chromium. The cases go into
a throwaway database `dashboard_bench` (never the real `cases` table), dropped at the end
unless --keep. Two measures per page:
- server: Streamlit's AppTest runs the page script (all SQL + figure building), with a cold
  cache for the first render, then after picking the largest category (a filter change);
- browser: `streamlit run` + headless Chromium, from navigation until the map's layers or the
  charts are drawn (first visit of each page, cold cache).
Writes bench/results/dashboard.json and a screenshot of each page.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from sf311.dashboard import scratch, serve
from sf311.dashboard.browser import CHROMIUM, Chromium
from sf311.settings import PROJECT_ROOT, load_settings

RESULTS = Path(__file__).resolve().parent / "results"
APP = PROJECT_ROOT / "dashboard"
PAGES = {
    "overview": "app.py",
    "map": "views/map.py",
    "charts": "views/charts.py",
    "predict": "views/predict.py",
}
DRAWN = {
    "overview": lambda s: len(s["metrics"]) >= 9 and s["plots"] >= 1,
    "map": lambda s: bool(s.get("leaflet") and s["leaflet"]["vectors"]),
    "charts": lambda s: s["plots"] >= 5 and all(s["plotMarks"]),
}


def _timed(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return elapsed


def server_times() -> dict[str, dict[str, float]]:
    """Return seconds of a cold first render and of a filter change for each page."""
    for script in PAGES.values():  # imports and Streamlit's own start-up, not measured
        AppTest.from_file(str(APP / script), default_timeout=120).run()
    out = {}
    for page, script in PAGES.items():
        st.cache_data.clear()
        at = AppTest.from_file(str(APP / script), default_timeout=120)
        first = _timed(at)
        if page == "predict":
            choices = at.selectbox(key="p_category").options
            at.selectbox(key="p_category").set_value(choices[len(choices) // 2])
        else:
            widget = at.sidebar.multiselect(key="_categories")
            widget.select(widget.options[0])
        change = _timed(at)
        out[page] = {"first_render_s": round(first, 3), "filter_change_s": round(change, 3)}
        print(f"server  {page:9s} first {first:6.2f} s   filter change {change:6.2f} s")
    return out


def browser_times(env: dict[str, str], port: int, label: str) -> dict[str, float]:
    """Return seconds from navigation to drawn data for each page, in headless Chromium."""
    server = subprocess.Popen(
        serve.command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not start") from None
                time.sleep(0.3)
        out = {}
        with Chromium() as browser:
            browser.navigate(f"{url}/predict")  # warms the server's imports, not measured
            time.sleep(5)
            for page, drawn in DRAWN.items():
                start = time.perf_counter()
                # The default page (overview) lives at "/": Streamlit ignores its url_path.
                browser.navigate(f"{url}/{'' if page == 'overview' else page}")
                browser.wait_for(drawn, timeout=120, poll=0.05)
                out[page] = round(time.perf_counter() - start, 3)
                print(f"browser {page:9s} drawn after {out[page]:6.2f} s")
                browser.screenshot(RESULTS / f"dashboard_{label}_{page}.png")
        return out
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=730, help="span of opened dates")
    parser.add_argument("--keep", action="store_true", help="keep database dashboard_bench")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    db = scratch.create(settings, "dashboard_bench")
    try:
        start = time.perf_counter()
        rows = scratch.fill_synthetic(db, args.rows, days=args.days)
        load_s = time.perf_counter() - start
        print(f"generated {rows:,} cases in {load_s:.1f} s")
        env = {
            "SF311_ANALYST_DSN": db.analyst_dsn,
            "SF311_API_URL": "http://127.0.0.1:9",  # down: the pages' fallback path
            "SF311_DASHBOARD_TILES": "none",
        }
        os.environ.update(env)
        result: dict = {
            "rows": rows,
            "days": args.days,
            "generate_s": round(load_s, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
            # The machine is shared: a high load average inflates every figure below.
            "load_average_1m_at_start": round(os.getloadavg()[0], 1),
            "targets": {"first_render_s": 2.0, "filter_change_s": 1.0},
        }
        result["server"] = server_times()
        if not args.no_browser and CHROMIUM.exists():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            result["browser_first_draw_s"] = browser_times({**os.environ, **env}, port, "bench")
    finally:
        if not args.keep:
            scratch.drop(settings, "dashboard_bench")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'dashboard.json'}")


if __name__ == "__main__":
    main()
