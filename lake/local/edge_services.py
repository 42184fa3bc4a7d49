"""The device edge on one machine, for ``lake demo --edge mqtt|http``: Mosquitto, the bridge, the gateway.

Each service runs as the real command (``lake mqtt start``'s Mosquitto, a
``lake bridge mqtt`` or ``lake gateway`` child process), so the demo goes
through exactly what production runs. ``edge(...)`` starts what an edge
needs, yields a sender factory and a way to wait until Kafka holds what the
devices sent, and stops what it started, whatever happened.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from confluent_kafka import Consumer, TopicPartition

from lake.edge import mosquitto
from lake_core import kafka_admin
from lake_core.errors import BrokerStartError, LakeError
from lake_core.processes import free_port, port_free
from lake_core.settings import Settings
from lake_core.storage import fs_path

STARTUP_TIMEOUT_S = 30.0


class KafkaCounter:
    """Counts the records that arrive in the telemetry and DLQ topics from now on, by reading them.

    (The embedded broker's high watermarks count batches, not records: reading is what counts.)"""

    def __init__(self, settings: Settings):
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": "lake-demo-edge",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "logger": kafka_admin.quiet_logger(),
            }
        )
        # Explicit positions (each partition's end now), not OFFSET_END: that one resolves lazily,
        # and a record sent before it resolved would never be counted.
        positions = []
        for topic in (settings.topic, settings.dlq_topic):
            for p in range(kafka_admin.partition_count(settings.bootstrap, topic)):
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                positions.append(TopicPartition(topic, p, high))
        self._consumer.assign(positions)
        self.count = 0

    def wait_for(self, expected: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.count < expected and time.monotonic() < deadline:
            batch = self._consumer.consume(10_000, timeout=0.5)
            self.count += sum(1 for m in batch if m.error() is None)
        return self.count

    def close(self) -> None:
        self._consumer.close()


@dataclass
class Edge:
    """A running edge: where devices send, and how to know Kafka has what they sent."""

    kind: str  # mqtt or http
    address: str  # what `lake simulate` reads from MQTT_HOST/MQTT_PORT or LAKE_GATEWAY_URL
    log: Path
    counter: KafkaCounter

    def wait_in_kafka(self, sent: int, timeout_s: float = 120.0) -> int:
        """Block until ``sent`` more records are in Kafka (telemetry + DLQ); return how many arrived.

        The gateway answers 202 only once Kafka holds a batch; the bridge forwards asynchronously,
        so this is what tells that the MQTT path has delivered everything."""
        return self.counter.wait_for(sent, timeout_s)


def _lake(settings: Settings, *args: str) -> list:
    return [
        sys.executable,
        "-m",
        "lake.cli",
        *args,
        "--lake-root",
        settings.lake_root,
        "--bootstrap",
        settings.bootstrap,
        "--topic",
        settings.topic,
    ]


def _wait_for(proc: subprocess.Popen, log: Path, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            tail = " | ".join(log.read_text(errors="replace").splitlines()[-5:]) if log.exists() else ""
            raise BrokerStartError(f"{what} did not start (exit {proc.returncode}): {tail or 'see ' + str(log)}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> Optional[int]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # both services finish what is in flight on SIGTERM
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _port(default: int) -> int:
    return default if port_free("127.0.0.1", default) else free_port()


@contextlib.contextmanager
def edge(kind: str, settings: Settings) -> Iterator[Edge]:
    """Start the ``mqtt`` (Mosquitto + bridge) or ``http`` (gateway) edge of a local lake for a ``with`` block."""
    logs = Path(fs_path(settings.lake_root, settings.paths.local_state))
    logs.mkdir(parents=True, exist_ok=True)
    counter = KafkaCounter(settings)
    try:
        with _edge(kind, settings, counter) as running_edge:
            yield running_edge
    finally:
        counter.close()


@contextlib.contextmanager
def _edge(kind: str, settings: Settings, counter: KafkaCounter) -> Iterator[Edge]:
    logs = Path(fs_path(settings.lake_root, settings.paths.local_state))
    if kind == "http":
        port = _port(8000)
        log = logs / "demo-gateway.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                # The demo replays hours of fleet time in seconds: each simulated vehicle sends far faster
                # than a real one may (--rate's default, 50/s), so the per-device limit is lifted here.
                _lake(settings, "gateway", "--port", str(port), "--workers", "1", "--rate", "1e6", "--burst", "1e6"),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _wait_for(proc, log, lambda: not port_free("127.0.0.1", port), "lake gateway")
        try:
            yield Edge("http", f"http://127.0.0.1:{port}", log, counter)
        finally:
            _stop(proc)
        return
    if kind != "mqtt":
        raise LakeError(f"unknown edge {kind!r}: mqtt or http")
    running = mosquitto.running_mosquitto(settings)
    info = running or mosquitto.start_mosquitto(settings, port=_port(mosquitto.DEFAULT_PORT))
    log = logs / "demo-bridge.log"
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            _lake(settings, "bridge", "mqtt", "--mqtt-port", str(info.port)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def subscribed() -> bool:
        with open(log, "rb") as f:
            f.seek(start)
            return b"subscribed to" in f.read()

    try:
        _wait_for(proc, log, subscribed, "lake bridge mqtt")
        yield Edge("mqtt", f"127.0.0.1:{info.port}", log, counter)
    finally:
        code = _stop(proc)
        if running is None:
            mosquitto.stop_mosquitto(settings)
        if code not in (0, None, -signal.SIGTERM):
            raise LakeError(f"lake bridge mqtt exited {code}: see {log}")
