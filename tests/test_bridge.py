"""`lake bridge mqtt`: MQTT QoS 1 into Kafka, acknowledged only after Kafka's delivery report.

Real Mosquitto (`lake mqtt start`), the real bridge command, Debian's
`mosquitto_pub`, the session's embedded Kafka. Messages are counted by event
id in Kafka: at least once on the topic, each event id covered (Silver, which
keeps the first of each, is tested on its own).
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from lake_core.processes import free_port
from lake_schemas.topics import DLQ_HEADER_DETAIL, DLQ_HEADER_REASON, DLQ_HEADER_SOURCE
from support.ingest_helpers import consume
from support.mqtt_edge import (
    PARTITIONS,
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

pytestmark = pytest.mark.skipif(have_mosquitto() is not None, reason=str(have_mosquitto()))


@pytest.fixture
def edge(kafka_bootstrap):
    with edge_lake(kafka_bootstrap) as settings:
        port = free_port()
        lake(settings, "mqtt", "start", "--port", str(port))
        yield settings, port


def event_ids(bootstrap: str, topic: str, expected: set, timeout_s: float) -> Counter:
    """How often each event id is on ``topic``, read until every one of ``expected`` is there (or time is up)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen: Counter = Counter()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(5000, 0.5):
                if m.error() is None:
                    seen[json.loads(m.value())["event_id"]] += 1
            if expected <= seen.keys():
                for m in consumer.consume(5000, 1.0):  # and a little longer, to count late duplicates
                    if m.error() is None:
                        seen[json.loads(m.value())["event_id"]] += 1
                break
    finally:
        consumer.close()
    return seen


def publish_many(port: int, secrets: dict, per_device: int) -> tuple[list, set]:
    """Every device publishes ``per_device`` snapshots at once (one ``mosquitto_pub -l`` each)."""
    procs, ids = [], set()
    for vid, secret in secrets.items():
        lines = []
        for _ in range(per_device):
            eid = str(uuid.uuid4())
            ids.add(eid)
            lines.append(snapshot(vid, event_id=eid))
        proc = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", vid, "-P", secret]
            + ["-t", f"telemetry/{vid}", "-q", "1", "-l"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdin.write("".join(line + "\n" for line in lines).encode())
        proc.stdin.close()
        procs.append(proc)
    return procs, ids


def wait_published(procs: list, timeout: float = 120) -> None:
    for proc in procs:
        assert proc.wait(timeout=timeout) == 0, proc.stderr.read()


def test_vehicle_mismatch_goes_to_the_dlq_and_everything_else_goes_on_as_is(edge, tmp_path):
    settings, port = edge
    secrets = add_devices(settings, "V1")
    bridge = start_bridge(settings, tmp_path / "bridge.log")
    good = snapshot("V1")
    claims_v2 = snapshot("V2")
    signal_v3 = json.dumps({"did": "V3", "timestamp": 1772352000000, "name": "soc", "int_value": 5})
    signal_v1 = json.dumps({"did": "V1", "timestamp": 1772352000000, "name": "soc", "int_value": 5})
    not_json = "{not json"
    no_vehicle = json.dumps({"event_id": "e1", "ts": 1})
    try:
        done = mosquitto_pub(
            port, "V1", secrets["V1"], "telemetry/V1", [good, claims_v2, signal_v3, not_json, signal_v1, no_vehicle]
        )
        assert done.returncode == 0, done.stderr
        forwarded = consume(settings.bootstrap, settings.topic, 4, partitions=PARTITIONS)
        dead = consume(settings.bootstrap, settings.dlq_topic, 2, partitions=PARTITIONS)
    finally:
        assert stop(bridge) == 0
    assert sorted(m.value().decode() for m in forwarded) == sorted([good, not_json, signal_v1, no_vehicle])
    assert {m.key() for m in forwarded} == {b"V1"}
    assert sorted(m.value().decode() for m in dead) == sorted([claims_v2, signal_v3])
    for m in dead:
        headers = {k: v.decode() for k, v in m.headers()}
        assert headers[DLQ_HEADER_REASON] == "vehicle_mismatch"
        assert headers[DLQ_HEADER_SOURCE] == "mqtt:telemetry/V1"
        assert "V2" in headers[DLQ_HEADER_DETAIL] or "V3" in headers[DLQ_HEADER_DETAIL]
        assert m.key() == b"V1"
    log = (tmp_path / "bridge.log").read_text()
    assert "forwarded 4, mismatched 2" in log


@pytest.mark.slow
def test_sigterm_finishes_what_is_in_flight_acknowledges_it_and_exits_0(edge, tmp_path):
    settings, port = edge
    secrets = add_devices(settings, "V1", "V2")
    log = tmp_path / "bridge.log"
    bridge = start_bridge(settings, log)
    procs, ids = publish_many(port, secrets, 20_000)
    assert wait_for(lambda: re.search(r"forwarded [1-9]", log.read_text()), 20), log.read_text()[-2000:]
    started = time.monotonic()
    assert stop(bridge, signal.SIGTERM) == 0, log.read_text()[-2000:]
    assert time.monotonic() - started < 15
    assert "bridge stopped" in log.read_text()
    wait_published(procs)
    second = start_bridge(settings, log)  # the same session: takes up where the first stopped
    try:
        seen = event_ids(settings.bootstrap, settings.topic, ids, 60)
    finally:
        assert stop(second, signal.SIGINT) == 0
    assert seen.keys() == ids
    # what the first bridge delivered it acknowledged before leaving: nothing came twice
    assert sum(seen.values()) == len(ids), f"{sum(seen.values()) - len(ids)} duplicate(s) after a graceful stop"


@pytest.mark.slow
def test_mosquitto_restarted_under_the_bridge_loses_nothing(edge, tmp_path):
    settings, port = edge
    secrets = add_devices(settings, "V1", "V2")
    log = tmp_path / "bridge.log"
    bridge = start_bridge(settings, log)
    try:
        procs, first = publish_many(port, secrets, 3_000)
        wait_published(procs)
        lake(settings, "mqtt", "stop")  # Mosquitto saves the bridge's session and its queue
        time.sleep(1.5)
        lake(settings, "mqtt", "start", "--port", str(port))
        assert wait_for(lambda: "reconnected to Mosquitto" in log.read_text(), 20), log.read_text()[-2000:]
        procs, second = publish_many(port, secrets, 3_000)
        wait_published(procs)
        seen = event_ids(settings.bootstrap, settings.topic, first | second, 60)
        assert bridge.poll() is None
    finally:
        assert stop(bridge) == 0
    assert seen.keys() == first | second


@pytest.mark.kafka_long
def test_sigkill_at_random_points_loses_nothing(edge, tmp_path):
    settings, port = edge
    secrets = add_devices(settings, *(f"V{i}" for i in range(8)))
    log = tmp_path / "bridge.log"
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    bridge = start_bridge(settings, log)
    procs, ids = publish_many(port, secrets, 12_500)  # 100K messages at QoS 1
    kills = 0
    for _ in range(5):
        time.sleep(rng.uniform(0.2, 1.5))
        bridge.send_signal(signal.SIGKILL)
        bridge.wait()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.5))
        bridge = start_bridge(settings, log, wait=rng.random() < 0.5)
    try:
        wait_published(procs)
        seen = event_ids(settings.bootstrap, settings.topic, ids, 180)
    finally:
        assert stop(bridge) == 0
    missing = ids - seen.keys()
    assert not missing, f"seed {seed}: {len(missing)} of {len(ids)} messages lost after {kills} SIGKILLs"
    assert seen.keys() == ids
    duplicates = sum(seen.values()) - len(ids)
    print(f"seed {seed}: {len(ids):,} messages, {kills} SIGKILLs, {duplicates:,} duplicate(s) in Kafka")


@pytest.mark.slow
def test_two_bridges_share_the_load_through_a_shared_subscription(edge, tmp_path):
    """`--shared GROUP`: Mosquitto hands each message to one bridge of the group; together they take all."""
    settings, port = edge
    secrets = add_devices(settings, *(f"S{i}" for i in range(4)))
    logs = [tmp_path / "b1.log", tmp_path / "b2.log"]
    bridges = [
        start_bridge(settings, log, "--shared", "fleet", "--client-id", f"lake-bridge-{i}")
        for i, log in enumerate(logs, 1)
    ]
    try:
        procs, ids = publish_many(port, secrets, 500)
        wait_published(procs)
        seen = event_ids(settings.bootstrap, settings.topic, ids, timeout_s=60)
    finally:
        codes = [stop(bridge) for bridge in bridges]
    assert codes == [0, 0], [log.read_text()[-1500:] for log in logs]
    assert ids <= seen.keys()
    forwarded = []
    for log in logs:
        [last] = [line for line in log.read_text().splitlines() if "bridge stopped" in line]
        forwarded.append(int(re.search(r"forwarded (\d+)", last).group(1)))
    assert all(n > 0 for n in forwarded), forwarded  # both took a share
    assert sum(forwarded) >= len(ids)


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end():
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bridge", "--messages", "2000", "--partitions", "2"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"bridge: [\d,]+ messages/s, baseline [\d,]+ messages/s, ratio \d+\.\d\d", last), last
    assert "CPU per 10K messages" in done.stdout
