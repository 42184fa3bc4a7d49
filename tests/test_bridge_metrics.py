"""``lake bridge mqtt --metrics-port``: its counters, read over HTTP while it runs, hold what was sent
through the project's Mosquitto (4 forwarded, 2 vehicle mismatches to the DLQ)."""

from __future__ import annotations

import json

import httpx
import pytest

from lake_core.processes import free_port
from support.ingest_helpers import consume
from support.mqtt_edge import (
    add_devices,
    edge_lake,
    have_mosquitto,
    lake,
    mosquitto_pub,
    snapshot,
    start_bridge,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.skipif(have_mosquitto() is not None, reason=str(have_mosquitto())), pytest.mark.slow]


def _series(text: str) -> dict[str, float]:
    return {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("lake_bridge_")
    }


def test_bridge_metrics_count_what_went_through(kafka_bootstrap, tmp_path):
    with edge_lake(kafka_bootstrap) as settings:
        port, metrics_port = free_port(), free_port()
        lake(settings, "mqtt", "start", "--port", str(port))
        secrets = add_devices(settings, "V1")
        bridge = start_bridge(settings, tmp_path / "bridge.log", "--metrics-port", str(metrics_port))
        lines = [snapshot("V1"), snapshot("V1"), snapshot("V2"), snapshot("V1"), snapshot("V1")]
        lines.append(json.dumps({"did": "V3", "timestamp": 1772352000000, "name": "soc", "int_value": 5}))
        try:
            assert mosquitto_pub(port, "V1", secrets["V1"], "telemetry/V1", lines).returncode == 0
            consume(settings.bootstrap, settings.topic, 4, partitions=4)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            seen = wait_for(lambda: _series(httpx.get(url).text).get("lake_bridge_messages_received_total") == 6, 20)
            series = _series(httpx.get(url).text)
        finally:
            assert stop(bridge) == 0
            lake(settings, "mqtt", "stop", check=False)
    assert seen, series
    assert series["lake_bridge_messages_forwarded_total"] == 4
    assert series["lake_bridge_messages_mismatched_total"] == 2
    assert series["lake_bridge_connected"] == 1 and series["lake_bridge_in_flight"] == 0
