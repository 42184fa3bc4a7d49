"""The fleet dashboard (``lake serve``'s ``/``) in headless Chromium, with 10,000 vehicles in a real hot
store: the map draws them inside the geofence, open alerts are listed, every chart renders, the page
refreshes on its own and loads nothing from outside the server. The screenshot is kept as
``test-output/dashboard.png``. The Great Expectations Data Docs it links to render offline (their CDN
assets replaced by copies the package ships)."""

from __future__ import annotations

import datetime as dt
import math
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lake.orchestration.run_log import record_silver_hour
from support import lake_scenario
from support.read_api_fleet import hot_database, insert_alerts, insert_vehicles, insert_zones, register, serving

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLEET = 10_000
OPEN_ALERTS = 40
NOW = int(time.time() * 1000)


def _fleet() -> list[dict]:
    rng = random.Random(7)
    rows = []
    for i in range(FLEET):
        r_km, theta = 15 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)  # inside the 20 km circle
        rows.append(
            {
                "vehicle_id": f"V{i:06d}",
                "lat": 52.52 + math.degrees(r_km * math.cos(theta) / 6371.0),
                "lon": 13.405 + math.degrees(r_km * math.sin(theta) / (6371.0 * math.cos(math.radians(52.52)))),
                "soc_pct": rng.uniform(3, 100),
                "charging": rng.random() < 0.1,
                "speed_kmh": rng.uniform(0, 25),
                "in_use": rng.random() < 0.4,
                "locked": False,
                "zone_id": "u33dbb",
                "last_event_ts": NOW - rng.randint(0, 600_000),
                "last_seen_at": NOW - rng.randint(0, 600_000),
                "online": rng.random() > 0.05,
                "in_operating_area": True,
                "kafka_partition": i % 8,
                "kafka_offset": i,
            }
        )
    return rows


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dashboard_lake"))
    with hot_database() as dsn:
        insert_vehicles(dsn, _fleet())
        rules = ["low_battery", "geofence", "offline"]
        insert_alerts(
            dsn,
            [
                (
                    str(uuid.uuid4()),
                    f"V{i:06d}",
                    rules[i % 3],
                    "critical" if i % 3 == 1 else "warning",
                    NOW - i * 240_000,
                    None if i < OPEN_ALERTS else NOW,
                    {},
                )
                for i in range(OPEN_ALERTS + 20)
            ],
        )
        latest = NOW - NOW % 300_000
        insert_zones(dsn, [(f"u33db{c}", latest - k * 300_000, 50 + k, 400 + 37 * k) for k in range(72) for c in "bc"])
        register(root, {f"V{i:06d}": "scooter" for i in range(FLEET)})
        lake_scenario.build(root)  # a Bronze hour, validated: Data Docs to serve
        gate = subprocess.run(
            [str(BIN / "lake"), "validate", "bronze", "--hour", "2026-03-01T08", "--lake-root", root],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert gate.returncode == 0, gate.stderr
        hour = dt.datetime.fromtimestamp(NOW / 1000, dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
        for k in range(1, 13):  # the hourly DAG's records: what the quarantine chart reads
            h = (hour - dt.timedelta(hours=k)).strftime("%Y-%m-%dT%H")
            record_silver_hour(root, h, {"hour": h, "rows_in": 10_000, "rows_out": 9_900 - k, "quarantined": 100 + k})
        with serving(root, dsn) as url:
            yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("needs Debian's chromium and chromium-driver packages (scripts/system-deps installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


_INKED = """
const c = document.getElementById(arguments[0]);
const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let inked = 0;
for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
return inked;
"""


def test_the_dashboard_shows_10000_vehicles_alerts_and_charts(dashboard, browser):
    browser.get(dashboard + "/")
    _wait(browser, "return Number(document.body.dataset.refreshes || 0) >= 1")
    assert "refresh failed" not in browser.find_element("id", "updated").text

    drawn = browser.execute_script("return document.getElementById('map').dataset")
    assert int(drawn["vehiclesDrawn"]) == FLEET and int(drawn["polygons"]) == 1
    assert browser.execute_script(_INKED, "map") > 50_000  # the area and the dots are painted

    rows = browser.find_elements("css selector", "#alerts tbody tr")
    assert len(rows) == OPEN_ALERTS
    assert {r.find_elements("tag name", "td")[2].text for r in rows} == {"low_battery", "geofence", "offline"}
    counts = browser.find_element("id", "counts").text
    assert f"{FLEET} vehicles" in counts and f"{OPEN_ALERTS} open alerts" in counts

    for chart, least in (("throughput", 72), ("freshness", 1), ("quarantine", 12), ("alerts", 3)):
        points = int(browser.execute_script(f"return document.getElementById('chart-{chart}').dataset.points"))
        assert points >= least, chart
        assert browser.execute_script(_INKED, f"chart-{chart}") > 500, chart
    assert "hot:" in browser.find_element("id", "freshness").text

    # everything came from the server itself: no CDN, no tile server
    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {dashboard}

    # it refreshes on its own
    _wait(browser, "return Number(document.body.dataset.refreshes) >= 2", timeout=30)

    kept = REPO / "test-output" / "dashboard.png"
    kept.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(kept))
    assert kept.stat().st_size > 20_000


def test_data_docs_render_offline_from_the_dashboards_link(dashboard, browser):
    browser.get(dashboard + "/")
    _wait(browser, "return Number(document.body.dataset.refreshes || 0) >= 1")
    browser.find_element("id", "data-docs").click()
    _wait(browser, "return document.querySelectorAll('table[data-rows] tbody tr').length > 0")
    rows = browser.find_elements("css selector", "table[data-rows] tbody tr")
    assert rows and all("bronze" in r.text.lower() for r in rows)  # the Bronze gate's validation results
    assert browser.execute_script("return typeof jQuery.fn.modal") == "function"  # Bootstrap's JS loaded
    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {dashboard}
    rows[0].click()  # the validation result itself
    _wait(browser, "return document.body.innerText.includes('Expectation Validation Result')")
    text = browser.find_element("tag name", "body").text
    assert "Expectation Suite: bronze_telemetry" in text and "Successful Expectations" in text
    assert "/data-docs/validations/" in browser.current_url
    kept = REPO / "test-output" / "data_docs.png"
    assert browser.save_screenshot(str(kept))
