"""``lake stream --metrics-port``: while the real stream follows the topic, its metrics (served by the child
process) count the records it committed, the vehicles in the hot store, the open alert and the commits'
end-to-end age."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import httpx
import pytest

from lake_core.processes import free_port
from support.hot_fleet import fresh_hot_store, snap
from support.ingest_helpers import produce

pytestmark = pytest.mark.slow


def _series(url: str) -> dict[str, float]:
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return {}
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("lake_")
    }


def test_stream_metrics_count_what_it_committed(settings, tmp_path):
    now = int(time.time() * 1000) - 60_000
    records = [
        (
            v.encode(),
            snap(v, now + i * 1000, location={"lat": 52.52, "lon": 13.4}, battery={"soc_pct": soc}),
            now + i * 1000,
        )
        for i, (v, soc) in enumerate([("M1", 80.0), ("M2", 60.0), ("M3", 10.0), ("M1", 79.0), ("M2", 59.0)])
    ]
    produce(settings, records)
    port = free_port()
    with contextlib.ExitStack() as stack:
        dsn = stack.enter_context(fresh_hot_store())
        log = open(tmp_path / "stream.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "lake.cli", "stream", "--bootstrap", settings.bootstrap, "--topic", settings.topic,
             "--hot-dsn", dsn, "--alerts-topic", f"{settings.topic}-alerts", "--follow", "--metrics-port", str(port),
             "--pass-seconds", "3"],  # the pass counters move at a pass's end (60 s by default)
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(lambda: (proc.terminate(), proc.wait(60)))
        url = f"http://127.0.0.1:{port}/metrics"
        deadline, series = time.monotonic() + 150, {}
        while time.monotonic() < deadline:
            series = _series(url)
            if series.get("lake_stream_records_total") == len(records) and series.get("lake_stream_state_vehicles"):
                break
            assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            time.sleep(1)
    assert series.get("lake_stream_records_total") == len(records), series
    assert series["lake_stream_state_vehicles"] == 3
    assert series['lake_stream_alerts{rule="low_battery",state="open"}'] == 1
    assert series["lake_stream_commits_total"] >= 1
    assert series["lake_stream_end_to_end_seconds_count"] >= 1
    assert series["lake_stream_end_to_end_seconds_sum"] >= 50  # the newest record was produced a minute ago
