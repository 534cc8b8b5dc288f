"""End to end: `streamlit run` of the dashboard, loaded in headless Chromium.

Waits for the maps (Leaflet layers inside the map's iframe), the Vega-Lite charts and the
tables of every page, checks they hold data from the known cases, and keeps screenshots under
var/dashboard/screenshots.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sf311.settings import Settings
from tests.support.browser import CHROMIUM, Chromium
from tests.support.dashboard_server import serving

LA = ZoneInfo("America/Los_Angeles")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium"),
]


@pytest.fixture(scope="module")
def dashboard_url(dashboard_db, free_port, tmp_path_factory) -> Iterator[str]:
    """Serve the dashboard on a free port against the test warehouse; yield its URL."""
    port = free_port()
    env = {
        **os.environ,
        "SF311_ANALYST_DSN": dashboard_db.analyst_dsn,
        "SF311_API_URL": f"http://127.0.0.1:{free_port()}",
        "SF311_DASHBOARD_TILES": "none",
    }
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with serving(env, port, log) as url:
        yield url


def test_browser_shows_map_charts_and_metrics(dashboard_url, settings: Settings, cases):
    shots = settings.state_dir / "dashboard" / "screenshots"
    with Chromium() as browser:
        browser.navigate(f"{dashboard_url}/map")
        state = browser.wait_for(lambda s: bool(s.get("leaflet") and s["leaflet"]["vectors"]))
        browser.screenshot(shots / "map.png")
        leaflet = state["leaflet"]
        # 5 neighborhood circles, clusters of the recent cases, the heat canvas, 3 layers.
        assert leaflet["vectors"] >= 5
        assert leaflet["clusters"] + leaflet["vectors"] > 5
        assert leaflet["heat"] == 1
        assert leaflet["layers"] == 3
        assert state["exceptions"] == 0

        browser.navigate(f"{dashboard_url}/charts")
        state = browser.wait_for(lambda s: s["charts"] >= 7 and all(s["chartMarks"]))
        browser.screenshot(shots / "charts.png")
        assert state["exceptions"] == 0

        browser.navigate(f"{dashboard_url}/backlog")
        state = browser.wait_for(
            lambda s: (
                len(s["metrics"]) >= 3
                and bool(s.get("leaflet"))
                and s["leaflet"]["clusters"] + s["leaflet"]["vectors"] > 0
                and s["tables"] >= 1
                and s["charts"] >= 1
                and all(s["chartMarks"])
            )
        )
        browser.screenshot(shots / "backlog.png")
        assert state["exceptions"] == 0
        backlog_counts = state["metrics"]

        browser.navigate(f"{dashboard_url}/cases")
        state = browser.wait_for(lambda s: s["tables"] >= 1)
        browser.screenshot(shots / "cases.png")
        assert state["exceptions"] == 0

        browser.navigate(f"{dashboard_url}/")  # the default page: Streamlit ignores its url_path
        state = browser.wait_for(lambda s: len(s["metrics"]) >= 9 and s["charts"] >= 2)
        browser.screenshot(shots / "overview.png")
        browser.navigate(f"{dashboard_url}/predict")
        browser.wait_for(lambda s: bool(s.get("leaflet")))
        before = browser.wait_for(lambda s: bool(s["location"]))["location"]
        browser.click_map(0.25, 0.3)  # up and left of the marker in the middle
        after = browser.wait_for(lambda s: s["location"] not in (None, before))["location"]
        browser.screenshot(shots / "predict.png")
    lat0, long0 = (float(v) for v in before.removeprefix("Location:").split(","))
    lat1, long1 = (float(v) for v in after.removeprefix("Location:").split(","))
    assert lat1 > lat0 and long1 < long0  # the picked point, north-west of the centroid
    start = datetime(2024, 3, 1, tzinfo=LA)
    end = datetime(2024, 3, 31, tzinfo=LA)
    in_range = sum(start <= c["requested_datetime"] < end for c in cases)
    assert state["metrics"][0] == f"{in_range:,}"
    # The fixture scores open case i as overdue, at risk, on time by i mod 3.
    open_ids = [c["service_request_id"] for c in cases if c["closed_date"] is None]
    assert backlog_counts == [f"{sum(i % 3 == k for i in open_ids):,}" for k in range(3)]
    assert (shots / "map.png").stat().st_size > 10_000
