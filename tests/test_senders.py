"""The sinks: Kafka (the embedded Tansu broker), MQTT (local Mosquitto), a file, the spool."""

from __future__ import annotations

import collections
import socket
import threading
import time

import pytest

from edge_client.config import Imperfections, SimulationConfig
from edge_client.errors import DeliveryError as LakeError
from edge_client.errors import UplinkUnavailableError as BrokerUnavailableError
from edge_client.offline_buffer import SpoolingSender
from edge_client.senders import CollectingSender, JsonlSender, KafkaSender, MqttSender, read_jsonl
from edge_client.simulate import message_batches, simulate
from lake.cli import main
from lake.local import broker as embedded
from lake_core import kafka_admin
from lake_core.processes import free_port

START_MS = 1_772_352_000_000
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0):
    """Read ``topic`` from the start of every partition (assigned, not a group: joins are slow on Tansu)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    partitions = kafka_admin.partition_count(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                assert msg.error() is None, msg.error()
                records.append(msg)
    finally:
        consumer.close()
    return records


def test_kafka_sender_keys_by_vehicle_and_stamps_simulated_send_time(settings):
    from confluent_kafka import TIMESTAMP_CREATE_TIME

    cfg = SimulationConfig(
        vehicles=30,
        duration_s=120,
        start_ms=START_MS,
        shape="mixed",
        seed=5,
        imperfections=Imperfections(0.01, 0.1, 0.01, 0.01),
    )
    expected = collections.Counter()
    for batch in message_batches(cfg):
        expected.update(zip(batch.keys, batch.values, batch.timestamps_ms))
    sender = KafkaSender(settings.bootstrap, settings.topic)
    stats = simulate(cfg, sender, progress=False)
    sender.close()
    assert stats.messages == sum(expected.values()) and sender.failed == 0

    records = consume_all(settings.bootstrap, settings.topic, stats.messages)
    got = collections.Counter()
    partition_of = {}
    for msg in records:
        kind, ts = msg.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        got[(msg.key(), msg.value(), ts)] += 1
        assert partition_of.setdefault(msg.key(), msg.partition()) == msg.partition()  # one vehicle, one partition
    assert got == expected
    assert len(set(partition_of.values())) > 1  # the fleet spreads over the partitions


def test_kafka_sender_fails_fast_when_no_broker_answers():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        KafkaSender(f"127.0.0.1:{port}", "vehicle-telemetry", connect_timeout_s=1.0)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_kafka_sender_close_raises_when_messages_are_lost(tmp_path):
    root = str(tmp_path)
    info = embedded.start_broker(root, port=free_port(), partitions=1, topics=["lost"])
    try:
        sender = KafkaSender(info.bootstrap, "lost", config={"message.timeout.ms": 1000})
    finally:
        embedded.stop_broker(root)  # the broker goes away mid-run
    for i in range(50):
        sender.send(b"V000001", b'{"n": %d}' % i, START_MS + i)
    with pytest.raises(LakeError, match="50 of 50 messages were not delivered"):
        sender.close()


def test_cli_simulate_to_kafka(settings, capsys):
    code = main(
        [
            "simulate",
            "--vehicles",
            "8",
            "--duration",
            "1m",
            "--bootstrap",
            settings.bootstrap,
            "--topic",
            settings.topic,
            "--lake-root",
            settings.lake_root,
            "--no-progress",
            "--no-registry",
            "--bad-rate",
            "0",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    sent = int(out.split("sent ", 1)[1].split(" messages")[0].replace(",", ""))
    assert sent >= 8 * 60
    assert len(consume_all(settings.bootstrap, settings.topic, sent)) == sent


@pytest.mark.slow
def test_cli_simulate_unreachable_kafka_is_one_line(tmp_path, capsys):
    code = main(
        [
            "simulate",
            "--vehicles",
            "2",
            "--duration",
            "10s",
            "--lake-root",
            str(tmp_path),
            "--bootstrap",
            f"127.0.0.1:{free_port()}",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == BrokerUnavailableError.exit_code
    assert len(err) == 1 and "no Kafka broker answers" in err[0]
    assert not (tmp_path / "dims").exists()  # nothing written before the sink is known to work


def test_jsonl_sender_round_trips(tmp_path):
    path = tmp_path / "deep" / "out.jsonl"
    sender = JsonlSender(path)
    values = [b'{"did":"V1","timestamp":1,"name":"soc","int_value":5}', b"not json \xc3\xa9", b"{trunc"]
    for i, v in enumerate(values):
        sender.send(b"V1", v, START_MS + i)
    sender.close()
    assert list(read_jsonl(path)) == [(b"V1", v, START_MS + i) for i, v in enumerate(values)]
    assert len(path.read_text().splitlines()) == 3


def test_jsonl_sender_unwritable_path_is_a_lake_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LakeError, match="cannot write"):
        JsonlSender(tmp_path / "file" / "out.jsonl")


# -- MQTT -------------------------------------------------------------------------------------------


def _mqtt_reachable() -> bool:
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=0.5):
            return True
    except OSError:
        return False


needs_mosquitto = pytest.mark.skipif(
    not _mqtt_reachable(), reason=f"no MQTT broker (Mosquitto) listening at {MQTT_HOST}:{MQTT_PORT}"
)


@needs_mosquitto
def test_mqtt_sender_publishes_per_vehicle_topics_at_qos1():
    import uuid

    import paho.mqtt.client as mqtt

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    received, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: received.append(
        (m.topic, m.payload, m.qos, dict(getattr(m.properties, "UserProperty", [])))
    )
    sub.connect(MQTT_HOST, MQTT_PORT)
    sub.loop_start()
    try:
        sub.subscribe(f"{prefix}/#", qos=1)
        assert subscribed.wait(5)
        cfg = SimulationConfig(
            vehicles=5, duration_s=30, start_ms=START_MS, shape="signal", imperfections=Imperfections.none()
        )
        sender = MqttSender(MQTT_HOST, MQTT_PORT, topic_prefix=prefix)
        expected = CollectingSender()
        simulate(cfg, expected, progress=False)
        stats = simulate(cfg, sender, progress=False)
        sender.close()
        assert sender.acked == sender.sent == stats.messages
        deadline = time.monotonic() + 10
        while len(received) < stats.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert len(received) == stats.messages
    assert sorted(
        (f"{prefix}/{k.decode()}", v, str(t)) for k, v, t in zip(expected.keys, expected.values, expected.timestamps_ms)
    ) == sorted((topic, payload, props["send_ts_ms"]) for topic, payload, _, props in received)
    assert {qos for _, _, qos, _ in received} == {1}


def test_mqtt_sender_no_broker_is_unavailable():
    with pytest.raises(BrokerUnavailableError, match="MQTT"):
        MqttSender("127.0.0.1", free_port(), connect_timeout_s=1.0)


# -- the offline spool ------------------------------------------------------------------------------


class FlakyUplink(CollectingSender):
    """Refuses every message while ``down``."""

    def __init__(self):
        super().__init__()
        self.down = False

    def send(self, key, value, timestamp_ms):
        if self.down:
            raise BrokerUnavailableError("uplink down")
        super().send(key, value, timestamp_ms)


def test_spool_keeps_messages_while_the_uplink_is_down_and_replays_in_order(tmp_path):
    uplink = FlakyUplink()
    spool = SpoolingSender(uplink, tmp_path / "spool.dat", retry_every_s=0)
    sent = [(b"V1", b'{"n": %d}' % i, START_MS + i) for i in range(30)]
    for i, msg in enumerate(sent):
        uplink.down = 10 <= i < 20
        spool.send(*msg)
        if i == 15:
            assert spool.backlog == 6 and len(uplink.values) == 10
    spool.close()
    assert list(zip(uplink.keys, uplink.values, uplink.timestamps_ms)) == sent
    assert spool.backlog == 0 and not (tmp_path / "spool.dat").exists()


def test_spool_survives_a_restart(tmp_path):
    path = tmp_path / "spool.dat"
    uplink = FlakyUplink()
    uplink.down = True
    first = SpoolingSender(uplink, path)
    for i in range(5):
        first.send(b"V1", b"%d" % i, START_MS + i)
    with pytest.raises(LakeError, match="5 messages wait"):
        first.close()
    uplink = FlakyUplink()
    second = SpoolingSender(uplink, path)
    assert second.backlog == 5
    second.send(b"V1", b"5", START_MS + 5)
    second.close()
    assert uplink.values == [b"%d" % i for i in range(6)]


def test_broker_stop_never_signals_a_process_that_is_not_the_broker(tmp_path, capsys):
    """The state file names a pid the kernel has since given to another program: stop leaves it alone."""
    import json
    import subprocess

    from lake.cli import main
    from lake_core.processes import broker_state_file, proc_stat

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        start = proc_stat(stranger.pid).start
        root = str(tmp_path)
        for record in (
            {"pid": stranger.pid, "port": 1, "bootstrap": "127.0.0.1:1", "log": "x", "start": start + 1},
            {"pid": stranger.pid, "port": 1, "bootstrap": "127.0.0.1:1", "log": "x"},  # an old record: no start
        ):
            broker_state_file(root).parent.mkdir(parents=True, exist_ok=True)
            broker_state_file(root).write_text(json.dumps(record))
            assert main(["broker", "stop", "--lake-root", root]) == 0
            assert stranger.poll() is None, "lake broker stop killed a stranger"
            assert not broker_state_file(root).exists()
    finally:
        stranger.kill()
        stranger.wait()
