"""Where simulated messages go: Kafka, an MQTT broker, or a JSON-lines file.

Every sink has the same three calls (the ``Sender`` protocol), so the
simulator never knows which one it feeds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Mapping, Optional, Protocol, Union

import msgspec

from edge_client.errors import DeliveryError, UplinkUnavailableError

__all__ = ["Sender", "KafkaSender", "JsonlSender", "MqttSender", "CollectingSender", "read_jsonl"]

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        """Queue one message; ``timestamp_ms`` is when the vehicle sent it (simulated time)."""

    def flush(self) -> None:
        """Return once everything queued so far is delivered (or raise).

        ``UplinkUnavailableError``: not everything is confirmed yet (it may still
        arrive); ``DeliveryError``: some messages were lost since the last flush.
        Network senders also take ``timeout_s``.
        """

    def close(self) -> None:
        """Flush, release the connection, and raise ``DeliveryError`` if any message was lost."""


# -- Kafka ------------------------------------------------------------------------------------------


def _quiet_kafka_logger() -> logging.Logger:
    """librdkafka logs each refused connection; the sender reports the failure once instead."""
    logger = logging.getLogger("edge_client.kafka")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


class _DeliveryFailures:
    """Counts the failed deliveries librdkafka reports."""

    def __init__(self) -> None:
        self.count = 0
        self.first_error: Optional[str] = None

    def on_delivery(self, err, msg) -> None:
        if err is not None:
            self.count += 1
            if self.first_error is None:
                self.first_error = str(err)


class KafkaSender:
    """Produces to ``topic``, keyed by vehicle id, with the simulated send time as record timestamp.

    Tuned for throughput (hundreds of thousands of small messages a second):
    batches linger a few milliseconds and are lz4-compressed. Delivery
    failures are counted as they are reported and raised by ``close``.
    """

    #: Producer settings; ``config`` passed to the constructor overrides them.
    DEFAULTS: Mapping[str, object] = {
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "batch.num.messages": 20_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.timeout.ms": 60_000,
        "partitioner": "murmur2_random",  # the Java client's choice: same key, same partition
        "delivery.report.only.error": True,  # a callback per success would cost more than the produce
    }
    _POLL_EVERY = 10_000

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        connect_timeout_s: float = 5.0,
        config: Optional[Mapping[str, object]] = None,
    ):
        from confluent_kafka import KafkaException, Producer

        self.topic = topic
        self.bootstrap = bootstrap
        self.sent = 0
        self._failures = _DeliveryFailures()
        self._failed_reported = 0  # failures a flush already raised
        settings = {
            **self.DEFAULTS,
            **(config or {}),
            "bootstrap.servers": bootstrap,
            "on_delivery": self._failures.on_delivery,  # not a method of self: a cycle through C is never freed
            "logger": _quiet_kafka_logger(),
        }
        self._producer = Producer(settings)
        self._produce = self._producer.produce
        self._KafkaException = KafkaException
        self._check_topic(connect_timeout_s)  # a clear error now, not undelivered messages later
        self._unpolled = 0

    def _check_topic(self, timeout_s: float) -> None:
        # All topics, not list_topics(topic=...): naming one makes auto-creating brokers create a mistyped one.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                metadata = self._producer.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                break
            except self._KafkaException as exc:
                if time.monotonic() >= deadline:
                    raise UplinkUnavailableError(f"no Kafka broker answers at {self.bootstrap} ({exc})") from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise UplinkUnavailableError(f"topic {self.topic!r} does not exist on {self.bootstrap}")

    @property
    def failed(self) -> int:
        """Messages whose delivery failed (reported so far)."""
        return self._failures.count

    @property
    def first_error(self) -> Optional[str]:
        return self._failures.first_error

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        while True:
            try:
                self._produce(self.topic, value, key, timestamp=timestamp_ms)
                break
            except BufferError:  # the local queue is full: let librdkafka deliver some
                self._producer.poll(0.05)
            except self._KafkaException as exc:  # refused before sending (too large for the client...)
                raise DeliveryError(f"cannot produce to {self.topic}: {exc.args[0].str()}") from None
        self.sent += 1
        self._unpolled += 1
        if self._unpolled >= self._POLL_EVERY:
            self._producer.poll(0)
            self._unpolled = 0

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait for every delivery report; raise if messages are still queued, or failed since the last flush."""
        left = self._producer.flush(timeout_s)
        self._unpolled = 0
        if left:
            raise UplinkUnavailableError(
                f"{left:,} messages still undelivered to {self.topic} at {self.bootstrap} after {timeout_s:g} s"
            )
        if self.failed > self._failed_reported:
            failed, self._failed_reported = self.failed - self._failed_reported, self.failed
            raise DeliveryError(
                f"{failed:,} of {self.sent:,} messages were not delivered to {self.topic} "
                f"at {self.bootstrap}: {self.first_error}"
            )

    def close(self, timeout_s: float = 120.0) -> None:
        self.flush(timeout_s)


# -- a file -----------------------------------------------------------------------------------------


class _JsonlRecord(msgspec.Struct):
    key: Optional[str]
    timestamp_ms: int
    value: str


_RECORD_ENCODER = msgspec.json.Encoder()
_RECORD_DECODER = msgspec.json.Decoder(_JsonlRecord)


class JsonlSender:
    """Writes one JSON object a line: ``{"key", "timestamp_ms", "value"}``, the value as text.

    The file replays the run exactly (``read_jsonl``) into any other sender.
    """

    def __init__(self, path: Union[str, os.PathLike], append: bool = False):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab" if append else "wb", buffering=1 << 20)
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.sent = 0

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        record = _JsonlRecord(
            key.decode("utf-8", "backslashreplace") if key is not None else None,
            timestamp_ms,
            value.decode("utf-8", "backslashreplace"),
        )
        self._file.write(_RECORD_ENCODER.encode(record) + b"\n")
        self.sent += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_jsonl(path: Union[str, os.PathLike]) -> Iterator[tuple[Optional[bytes], bytes, int]]:
    """``(key, value, timestamp_ms)`` of each line a ``JsonlSender`` wrote, in order."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = _RECORD_DECODER.decode(line)
            except msgspec.MsgspecError as exc:
                raise DeliveryError(f"{path}:{number}: not a simulator record ({exc})") from None
            yield (rec.key.encode() if rec.key is not None else None), rec.value.encode(), rec.timestamp_ms


class CollectingSender:
    """Keeps every message in memory: for tests and notebooks."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.timestamps_ms: list[int] = []
        self.flushes = 0
        self.closed = False

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.keys.append(key)
        self.values.append(value)
        self.timestamps_ms.append(timestamp_ms)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


# -- MQTT -------------------------------------------------------------------------------------------


def wait_for_pubacks(sender, target: int, timeout_s: float) -> None:
    """Block until ``sender.acked`` reaches ``target`` (its PUBACK callback notifies ``sender._acks``);
    ``UplinkUnavailableError`` after ``timeout_s``. Shared by the MQTT senders."""
    deadline = time.monotonic() + timeout_s
    with sender._acks:
        while sender.acked < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UplinkUnavailableError(
                    f"MQTT broker at {sender.address} acknowledged {sender.acked:,} "
                    f"of {sender.sent:,} messages within {timeout_s:g} s"
                )
            sender._acks.wait(min(left, 0.5))


class MqttSender:
    """Publishes to ``{topic_prefix}/{vehicle_id}`` at QoS 1 (MQTT 5), as a vehicle's modem would.

    MQTT has no record timestamp: the send time travels as the user property
    ``send_ts_ms``, for the bridge that forwards to Kafka. ``flush`` waits
    until the broker has acknowledged every publish.
    """

    MAX_UNACKED = 10_000  # beyond this, ``send`` waits: the broker sets the pace

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        topic_prefix: str = "telemetry",
        qos: int = 1,
        connect_timeout_s: float = 5.0,
        client_id: Optional[str] = None,
    ):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._mqtt, self._Properties, self._PUBLISH = mqtt, Properties, PacketTypes.PUBLISH
        self.address = f"{host}:{port}"
        self.topic_prefix = topic_prefix.rstrip("/")
        self.qos = qos
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self._failed_reported = 0  # refusals a flush already raised
        self._connected = threading.Event()
        self._connect_reason: Optional[str] = None
        self._acks = threading.Condition()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"lake-sim-{os.getpid()}-{id(self):x}",
            protocol=mqtt.MQTTv5,
        )
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        try:
            client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise UplinkUnavailableError(f"no MQTT broker answers at {self.address} ({exc})") from None
        client.loop_start()
        if not self._connected.wait(connect_timeout_s) or self._connect_reason:
            client.loop_stop()
            reason = self._connect_reason or f"no answer within {connect_timeout_s:g} s"
            raise UplinkUnavailableError(f"MQTT broker at {self.address} refused the connection ({reason})")
        self._client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connect_reason = str(reason_code)
        self._connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acks:
            self.acked += 1
            if reason_code.is_failure:
                self.failed += 1
            self._acks.notify_all()

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        if self.sent - self.acked >= self.MAX_UNACKED:
            self._wait_for_acks(self.sent - self.MAX_UNACKED // 2)
        props = self._Properties(self._PUBLISH)
        props.UserProperty = ("send_ts_ms", str(timestamp_ms))
        info = self._client.publish(f"{self.topic_prefix}/{key.decode()}", value, qos=self.qos, properties=props)
        queued = info.rc == self._mqtt.MQTT_ERR_NO_CONN and self.qos > 0  # paho sends it on reconnect
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS and not queued:
            raise UplinkUnavailableError(f"MQTT publish to {self.address} failed: {self._mqtt.error_string(info.rc)}")
        self.sent += 1

    def _wait_for_acks(self, target: int, timeout_s: float = 60.0) -> None:
        wait_for_pubacks(self, target, timeout_s)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every PUBACK; raise if some are missing, or the broker refused messages since the last flush."""
        if self.qos > 0:
            self._wait_for_acks(self.sent, timeout_s)
        if self.failed > self._failed_reported:
            failed, self._failed_reported = self.failed - self._failed_reported, self.failed
            raise DeliveryError(f"the MQTT broker at {self.address} refused {failed:,} of {self.sent:,} messages")

    def close(self, timeout_s: float = 60.0) -> None:
        try:
            self.flush(timeout_s)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
