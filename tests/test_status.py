"""``lake status`` on a hand-made lake (two complete Bronze hours, a Silver hour recorded by the DAG,
no broker, no hot store): freshness per layer, what runs, unreachable sources named, one screen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lake.orchestration.run_log import record_silver_hour
from support import lake_scenario

pytestmark = pytest.mark.slow  # two `lake status` processes, each waiting out the unreachable broker and database

BIN = Path(sys.executable).parent
T0 = 1772352000000  # 2026-03-01T08:00:00Z
HOUR = 3_600_000


def _status(root: str, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "LAKE_HOT_DSN": "postgresql://postgres@127.0.0.1:1/none",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    return subprocess.run(
        [str(BIN / "lake"), "status", "--lake-root", root, "--kafka-timeout", "0.5", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_status_reports_freshness_running_parts_and_what_it_could_not_read(tmp_path):
    root = str(tmp_path / "lake")
    lake_scenario.build(root)  # Bronze hours 08 and 09, both complete
    record_silver_hour(root, "2026-03-01T08", {"hour": "2026-03-01T08", "rows_in": 10, "rows_out": 9, "quarantined": 1})

    done = _status(root, "--format", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    layers = {layer["layer"]: layer for layer in body["freshness"]}
    assert layers["bronze"]["published_until_ms"] == T0 + 2 * HOUR and layers["bronze"]["open_hours"] == 0
    assert layers["silver"]["published_until_ms"] == T0 + HOUR
    assert layers["gold"]["published_until_ms"] is None
    assert body["newest_kafka_ms"] is None  # no broker at 127.0.0.1:1
    components = {c["name"]: c["state"] for c in body["components"]}
    assert components["ingest"] == "stopped" and components["broker"] == "stopped"
    assert components["stream"] == "unknown"
    assert any("hot store" in u for u in body["unreadable"])

    text = _status(root).stdout
    assert text.splitlines()[0] == "RUNNING" and "FRESHNESS" in text and "LAST FAILURES" in text
    assert "2026-03-01T10:00:00Z" in text  # Bronze holds everything before 10:00
    assert len(text.splitlines()) < 30  # one screen


def test_status_names_the_running_gateway_and_forgets_a_killed_one(tmp_path):
    """A real `lake gateway` announces itself; once SIGKILLed (no chance to clean up) the status says stopped."""
    from lake_core.processes import free_port  # noqa: PLC0415 - only this test needs it

    root = str(tmp_path / "lake")
    lake_scenario.build(root)
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    gateway = subprocess.Popen(
        [str(BIN / "lake"), "gateway", "--lake-root", root, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        record = Path(root, "_local", "services", f"gateway-{gateway.pid}.json")
        deadline = time.monotonic() + 30
        while not record.exists() and gateway.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists(), gateway.stderr.read().decode() if gateway.poll() is not None else "no record"
        body = json.loads(_status(root, "--format", "json").stdout)
        gateways = [c for c in body["components"] if c["name"] == "gateway"]
        assert [g["state"] for g in gateways] == ["running"]
        assert f"pid {gateway.pid}" in gateways[0]["detail"] and f"127.0.0.1:{port}/metrics" in gateways[0]["detail"]
        assert {c["name"]: c["state"] for c in body["components"]}["bridge"] == "stopped"
    finally:
        gateway.kill()
        gateway.wait(10)
    assert record.exists()  # SIGKILL: the record stays behind...
    body = json.loads(_status(root, "--format", "json").stdout)
    assert [c["state"] for c in body["components"] if c["name"] == "gateway"] == ["stopped"]
    assert not record.exists()  # ...and is dropped by the next reader
