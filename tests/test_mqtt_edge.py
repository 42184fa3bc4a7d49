"""The lake's Mosquitto (`lake mqtt start|stop|status`): who may connect, who may publish where.

Real Mosquitto on a free port, real `lake` commands, Debian's `mosquitto_pub`
and `mosquitto_sub` (clients we did not write), the session's embedded Kafka.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from lake.edge import mosquitto
from lake_core.processes import free_port
from support.ingest_helpers import consume
from support.mqtt_edge import (
    PARTITIONS,
    add_devices,
    bridge_secret,
    edge_lake,
    have_mosquitto,
    lake,
    lake_argv,
    mosquitto_pub,
    snapshot,
    start_bridge,
    stop,
    wait_for,
)

pytestmark = pytest.mark.skipif(have_mosquitto() is not None, reason=str(have_mosquitto()))


@pytest.fixture
def edge(kafka_bootstrap):
    with edge_lake(kafka_bootstrap) as settings:
        yield settings


def start_mqtt(settings, *extra) -> int:
    port = free_port()
    done = lake(settings, "mqtt", "start", "--port", str(port), *extra)
    assert done.stdout.splitlines()[0] == f"mqtt://127.0.0.1:{port}"
    return port


class Subscriber:
    """``mosquitto_sub`` as the bridge's account, printing what reaches ``telemetry/+``."""

    def __init__(self, settings, port: int, out: Path):
        self.out = out
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", mosquitto.BRIDGE_USER]
            + ["-P", bridge_secret(settings), "-t", "telemetry/+", "-q", "1", "-v"],
            stdout=open(out, "w"),
            stderr=subprocess.STDOUT,
        )
        time.sleep(0.3)  # subscribed

    def lines(self) -> list:
        return self.out.read_text().splitlines()

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.mark.slow
def test_a_device_reaches_kafka_and_bronze_through_the_bridge(edge, tmp_path):
    port = start_mqtt(edge)
    secrets = add_devices(edge, "V1", "V2")
    bridge = start_bridge(edge, tmp_path / "bridge.log")
    try:
        messages = [snapshot("V1") for _ in range(3)]
        done = mosquitto_pub(port, "V1", secrets["V1"], "telemetry/V1", messages)
        assert done.returncode == 0, done.stderr
        got = consume(edge.bootstrap, edge.topic, 3, partitions=PARTITIONS)
        assert sorted(m.value().decode() for m in got) == sorted(messages)
        assert {m.key() for m in got} == {b"V1"}
    finally:
        assert stop(bridge) == 0, (tmp_path / "bridge.log").read_text()
    ingest = lake(edge, "ingest", "--until-idle", "1", "--close-open-hours", timeout=300)
    assert ingest.returncode == 0
    import pyarrow.dataset as ds

    bronze = ds.dataset(f"{edge.lake_root}/bronze/telemetry", format="parquet", partitioning="hive").to_table()
    assert sorted(bronze["payload"].to_pylist()) == sorted(messages)
    assert set(bronze["vehicle_id"].to_pylist()) == {"V1"}


def test_a_device_publishes_only_to_its_own_topic(edge, tmp_path):
    port = start_mqtt(edge)
    secrets = add_devices(edge, "V1", "V2")
    sub = Subscriber(edge, port, tmp_path / "sub.out")
    try:
        other = mosquitto_pub(port, "V1", secrets["V1"], "telemetry/V2", ["as V2"], "-V", "5")
        assert "Not authorized" in other.stderr  # MQTT 5 tells the device; MQTT 3 drops it silently
        mosquitto_pub(port, "V1", secrets["V1"], "telemetry/V2", ["as V2 over MQTT 3"])
        mosquitto_pub(port, "V1", secrets["V1"], "lake/other", ["elsewhere"])
        own = mosquitto_pub(port, "V1", secrets["V1"], "telemetry/V1", ["mine"])
        assert own.returncode == 0, own.stderr
        assert wait_for(lambda: "telemetry/V1 mine" in sub.lines(), 5)
        time.sleep(0.3)
        assert sub.lines() == ["telemetry/V1 mine"]
    finally:
        sub.close()
    # a device reads nothing, not even its own topic
    read = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", "V1", "-P", secrets["V1"]]
        + ["-t", "telemetry/V1", "-q", "1", "-V", "5", "-C", "1", "-W", "2"],
        capture_output=True,
        text=True,
    )
    assert read.returncode != 0 and "mine" not in read.stdout


@pytest.mark.parametrize(
    "user, password",
    [("V1", "lk1.V1.wrong"), (None, None), ("V9", "lk1.V9.unknown"), (mosquitto.BRIDGE_USER, "guess")],
    ids=["wrong-password", "anonymous", "unknown-device", "bridge-account-guessed"],
)
def test_who_cannot_connect(edge, user, password):
    port = start_mqtt(edge)
    add_devices(edge, "V1")
    done = mosquitto_pub(port, user, password, "telemetry/V1", ["x"])
    assert done.returncode != 0
    assert "not authorised" in done.stderr.lower()


@pytest.mark.slow
def test_a_revoked_device_is_refused_within_10_s_even_when_connected(edge, tmp_path):
    port = start_mqtt(edge)
    secrets = add_devices(edge, "V1", "V2")
    sub = Subscriber(edge, port, tmp_path / "sub.out")
    connected = subprocess.Popen(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", "V1", "-P", secrets["V1"]]
        + ["-t", "telemetry/V1", "-q", "1", "-l", "-V", "5", "-i", "device-V1"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        connected.stdin.write("before\n")
        connected.stdin.flush()
        assert wait_for(lambda: "telemetry/V1 before" in sub.lines(), 5)
        revoked_at = time.monotonic()
        lake(edge, "devices", "revoke", "V1")
        # Mosquitto 2.0 re-checks connected clients on reload: the connected device is dropped
        log = Path(mosquitto.running_mosquitto(edge).log)
        assert wait_for(lambda: "Client device-V1 disconnected" in log.read_text(), 10), log.read_text()
        assert time.monotonic() - revoked_at < 10
        connected.stdin.write("after\n")  # it reconnects to send this, and is refused
        connected.stdin.close()
        assert connected.wait(timeout=10) != 0
        assert "not authori" in connected.stderr.read().lower()
        again = mosquitto_pub(port, "V1", secrets["V1"], "telemetry/V1", ["after"])
        assert again.returncode != 0 and "not authorised" in again.stderr.lower()
        assert mosquitto_pub(port, "V2", secrets["V2"], "telemetry/V2", ["others go on"]).returncode == 0
        assert wait_for(lambda: "telemetry/V2 others go on" in sub.lines(), 5)
        assert not any("after" in line for line in sub.lines())
    finally:
        connected.kill()
        sub.close()
    # re-admitted with a new secret: connects again at once (devices add reloads Mosquitto too)
    fresh = add_devices(edge, "V1")
    assert mosquitto_pub(port, "V1", fresh["V1"], "telemetry/V1", ["back"]).returncode == 0


def test_tls_listener_is_verified_with_the_generated_ca(edge):
    port = free_port()
    tls_port = free_port()
    done = lake(edge, "mqtt", "start", "--port", str(port), "--tls", "--tls-port", str(tls_port))
    ca = Path(edge.lake_root) / "_local" / "mqtt" / "tls" / "ca.crt"
    assert f"--cafile {ca}" in done.stdout
    secrets = add_devices(edge, "V1")
    ok = mosquitto_pub(tls_port, "V1", secrets["V1"], "telemetry/V1", ["over TLS"], "--cafile", str(ca))
    assert ok.returncode == 0, ok.stderr
    unverified = subprocess.run(  # -m, not -l: with -l mosquitto_pub retries a failed handshake for ever
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(tls_port), "-u", "V1", "-P", secrets["V1"]]
        + ["-t", "telemetry/V1", "-q", "1", "-m", "x", "--capath", "/etc/ssl/certs"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unverified.returncode != 0 and "tls" in unverified.stderr.lower()
    assert mosquitto_pub(port, "V1", secrets["V1"], "telemetry/V1", ["plain"]).returncode == 0
    assert (ca.parent / "ca.key").stat().st_uid == 0 or (ca.parent / "ca.key").stat().st_mode & 0o077 == 0


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _pids_listening_on(port: int) -> set:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return {int(part.split("=")[1]) for part in out.replace(",", " ").split() if part.startswith("pid=")}


def test_status_stop_and_the_machines_own_mosquitto_untouched(edge):
    machine_before = _accepts(1883), _pids_listening_on(1883)
    assert lake(edge, "mqtt", "status", check=False).returncode == 1
    port = start_mqtt(edge)
    add_devices(edge, "V1", "V2")
    status = lake(edge, "mqtt", "status")
    info = mosquitto.running_mosquitto(edge)
    assert info is not None and info.port == port and info.port != 1883
    assert f"pid {info.pid}, port {port}" in status.stdout and "2 active device(s)" in status.stdout
    assert info.pid not in _pids_listening_on(1883)
    again = lake(edge, "mqtt", "start", "--port", str(port))  # idempotent: the running one
    assert again.stdout.startswith(f"mqtt://127.0.0.1:{port}")
    assert mosquitto.running_mosquitto(edge).pid == info.pid
    config = Path(info.config).read_text()
    assert "allow_anonymous false" in config and "1883" not in config
    stopped = lake(edge, "mqtt", "stop")
    assert f"pid {info.pid}" in stopped.stdout
    assert wait_for(lambda: not _accepts(port), 5)
    assert lake(edge, "mqtt", "status", check=False).returncode == 1
    assert "not running" in lake(edge, "mqtt", "stop").stdout
    assert (_accepts(1883), _pids_listening_on(1883)) == machine_before


def test_stop_signals_only_the_process_it_started(edge):
    port = start_mqtt(edge)
    info = mosquitto.running_mosquitto(edge)
    state = Path(edge.lake_root) / "_local" / "mqtt" / "mosquitto.json"
    record = json.loads(state.read_text())
    decoy = subprocess.Popen(["sleep", "30"])
    try:
        state.write_text(json.dumps({**record, "pid": decoy.pid}))  # a stale record naming another process
        assert mosquitto.running_mosquitto(edge) is None
        assert "not running" in lake(edge, "mqtt", "stop").stdout
        assert decoy.poll() is None
    finally:
        decoy.kill()
        state.write_text(json.dumps(record))
    assert lake(edge, "mqtt", "stop").returncode == 0
    assert not info.is_running() and not _accepts(port)


def test_generated_files_are_private_and_readable_by_mosquitto(edge):
    start_mqtt(edge)
    add_devices(edge, "V1")
    folder = Path(edge.lake_root) / "_local" / "mqtt"
    for name in ("passwd", "acl", "bridge.secret"):
        assert (folder / name).stat().st_mode & 0o077 == 0, name
    acl = (folder / "acl").read_text()
    assert "user V1\ntopic write telemetry/V1\n" in acl
    assert f"user {mosquitto.BRIDGE_USER}\ntopic read telemetry/#\n" in acl
    passwd = dict(line.split(":", 1) for line in (folder / "passwd").read_text().splitlines())
    assert set(passwd) == {"V1", mosquitto.BRIDGE_USER} and passwd["V1"].startswith("$7$")
    assert "revoked" not in lake(edge, "devices", "revoke", "V1").stderr
    assert "V1" not in (folder / "passwd").read_text()


@pytest.mark.slow
def test_run_in_the_foreground_follows_devices_added_elsewhere_and_stops_on_sigterm(edge, tmp_path):
    """`lake mqtt run` (compose, systemd): no `lake devices` can signal it, so it reads the store itself."""
    from lake_core.devices import DeviceStore

    port = free_port()
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        lake_argv(edge, "mqtt", "run", "--port", str(port), "--watch-every", "1"),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(lambda: "mqtt://" in log.read_text() or proc.poll() is not None, 20)
        assert proc.poll() is None, log.read_text()
        # Written straight into the store, as another machine's `lake devices add` would: no reload signal here.
        secret = DeviceStore(edge.lake_root).add("V9", "scooter")
        assert wait_for(lambda: "reloaded" in log.read_text(), 15), log.read_text()
        ok = mosquitto_pub(port, "V9", secret, "telemetry/V9", [snapshot("V9")])
        assert ok.returncode == 0, ok.stderr
        DeviceStore(edge.lake_root).revoke("V9")
        assert wait_for(lambda: log.read_text().count("reloaded") >= 2, 15), log.read_text()
        refused = mosquitto_pub(port, "V9", secret, "telemetry/V9", [snapshot("V9")])
        assert refused.returncode != 0
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()
    assert mosquitto.running_mosquitto(edge) is None
    assert socket.socket().connect_ex(("127.0.0.1", port)) != 0  # Mosquitto went with it
