"""`lake simulate --sink http|mqtt`: each simulated vehicle sends as itself, through the spool, into Kafka.

Real gateway and Mosquitto + bridge processes, the session's embedded Kafka,
the real `lake simulate` command. The reference for "what was sent" is the
same simulation (same seed) written to a JSONL file.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from lake_core.processes import free_port, port_free
from support.ingest_helpers import consume
from support.mqtt_edge import PARTITIONS, edge_lake, have_mosquitto, lake, lake_argv, start_bridge, stop, wait_for

SIM = ["--vehicles", "4", "--shape", "snapshot", "--bad-rate", "0", "--duplicate-rate", "0", "--no-progress"]


@pytest.fixture
def edge(kafka_bootstrap):
    with edge_lake(kafka_bootstrap) as settings:
        yield settings


def reference(settings, tmp_path: Path, *flags: str) -> list:
    """The messages the same simulation sends, from a JSONL sink."""
    out = tmp_path / "reference.jsonl"
    lake(settings, "simulate", *SIM, *flags, "--sink", f"jsonl:{out}", "--no-registry")
    return [json.loads(json.loads(line)["value"]) for line in out.read_text().splitlines()]


def start_gateway(settings, port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            lake_argv(settings, "gateway", "--port", str(port), "--workers", "1", "--rate", "1e6", "--burst", "1e6"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    assert wait_for(lambda: not port_free("127.0.0.1", port) or proc.poll() is not None, 30)
    assert proc.poll() is None, log.read_text()
    return proc


def simulate(settings, env: dict, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        lake_argv(settings, "simulate", *SIM, *flags),
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_every_message_in_order(settings, sent: list) -> None:
    """Kafka holds every sent event (at least once) and, per vehicle, first occurrences in the order sent."""
    got = consume(settings.bootstrap, settings.topic, len(sent), timeout_s=60, partitions=PARTITIONS)
    events = [json.loads(m.value()) for m in got]
    assert {e["event_id"] for e in events} == {e["event_id"] for e in sent}
    assert all(m.key().decode() == json.loads(m.value())["vehicle_id"] for m in got)
    order = defaultdict(list)
    for e in events:  # consume() returns each partition in offset order; a vehicle lives in one partition
        if e["event_id"] not in order[e["vehicle_id"]]:
            order[e["vehicle_id"]].append(e["event_id"])
    expected = defaultdict(list)
    for e in sent:
        expected[e["vehicle_id"]].append(e["event_id"])
    assert order == expected


@pytest.mark.slow
def test_http_sink_sends_as_each_vehicle_and_spools_through_an_outage(edge, tmp_path):
    sent = reference(edge, tmp_path, "--duration", "20s", "--seed", "5")
    port = free_port()
    gateway = start_gateway(edge, port, tmp_path / "gateway.log")
    # --realtime: 20 s of fleet time take 20 s, so the gateway can go away in the middle of it
    sim = simulate(
        edge,
        {"LAKE_GATEWAY_URL": f"http://127.0.0.1:{port}"},
        "--sink",
        "http",
        "--duration",
        "20s",
        "--seed",
        "5",
        "--realtime",
    )
    try:
        time.sleep(6)
        assert stop(gateway) == 0  # graceful: what it accepted is in Kafka
        time.sleep(5)  # the devices keep sending: into the spool
        gateway = start_gateway(edge, port, tmp_path / "gateway.log")
        out, err = sim.communicate(timeout=120)
    finally:
        stop(gateway)
        if sim.poll() is None:
            sim.kill()
    assert sim.returncode == 0, err
    assert "uplink down" in err, out  # the outage was seen (one warning), not skipped
    assert f"sent {len(sent)} messages" in out.replace(",", "") and "via spool" in out
    assert "4 new device credentials" in out
    assert_every_message_in_order(edge, sent)
    keys = Path(edge.lake_root) / "_local" / "fleet_keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert not (Path(edge.lake_root) / "_local" / "spool" / "http.spool").exists()  # emptied, then removed
    listed = lake(edge, "devices", "list", "--format", "json").stdout
    assert len(json.loads(listed)) == 4


def test_an_unreachable_edge_fails_before_anything_is_written(edge, tmp_path):
    port = free_port()
    done = subprocess.run(
        lake_argv(edge, "simulate", *SIM, "--duration", "5s", "--sink", "http"),
        env={**os.environ, "LAKE_GATEWAY_URL": f"http://127.0.0.1:{port}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "no HTTP gateway (`lake gateway`) answers" in done.stderr
    assert not (Path(edge.lake_root) / "_devices").exists()
    assert not (Path(edge.lake_root) / "_local" / "fleet_keys.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(have_mosquitto() is not None, reason=str(have_mosquitto()))
def test_mqtt_sink_reaches_kafka_through_mosquitto_and_the_bridge_across_a_mosquitto_restart(edge, tmp_path):
    sent = reference(edge, tmp_path, "--duration", "20s", "--seed", "6")
    port = free_port()
    lake(edge, "mqtt", "start", "--port", str(port))
    bridge = start_bridge(edge, tmp_path / "bridge.log")
    sim = simulate(edge, {}, "--sink", "mqtt", "--duration", "20s", "--seed", "6", "--realtime")
    try:
        time.sleep(6)
        lake(edge, "mqtt", "stop")
        time.sleep(4)
        lake(edge, "mqtt", "start", "--port", str(port))
        out, err = sim.communicate(timeout=120)
        assert sim.returncode == 0, err
        assert "via spool" in out and f"mqtt 127.0.0.1:{port}" in out  # found `lake mqtt start`'s port itself
        assert_every_message_in_order(edge, sent)
    finally:
        if sim.poll() is None:
            sim.send_signal(signal.SIGKILL)
        assert stop(bridge) == 0, (tmp_path / "bridge.log").read_text()


@pytest.mark.slow
def test_a_revoked_vehicle_stops_the_simulation_at_once_and_its_messages_stay_spooled(edge, tmp_path):
    """401 is not an outage: waiting does not cure a revoked secret, so it is an error now, not a retry loop."""
    port = free_port()
    gateway = start_gateway(edge, port, tmp_path / "gateway.log")
    env = {"LAKE_GATEWAY_URL": f"http://127.0.0.1:{port}"}
    try:
        first = simulate(edge, env, "--sink", "http", "--duration", "10s")
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        lake(edge, "devices", "revoke", "V000002")
        time.sleep(3)  # the gateway re-reads the credentials every 2 s
        second = simulate(edge, env, "--sink", "http", "--duration", "10s", "--seed", "9")
        out, err = second.communicate(timeout=60)
    finally:
        stop(gateway)
    assert second.returncode == 2, err
    assert "refused vehicle V000002 (401" in err and "revoked or wrong" in err
    spool = Path(edge.lake_root) / "_local" / "spool" / "http.spool"
    assert spool.exists() and spool.stat().st_size > 16  # kept for the next run, not dropped
