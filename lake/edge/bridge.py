"""The MQTT-to-Kafka bridge (contract section 8): ``telemetry/<vehicle id>`` -> the telemetry topic.

It subscribes to ``telemetry/+`` at QoS 1 in a persistent MQTT 5 session and
produces each message, byte for byte, keyed by the topic's vehicle id. A
message is acknowledged to Mosquitto (PUBACK) only once Kafka's delivery
report for it came back; until then Mosquitto keeps it, so a SIGKILLed
bridge loses nothing: its session's unacknowledged messages are delivered
again when it comes back (Silver removes the duplicates by event id).

A payload naming another vehicle than its topic (``vehicle_id``, or ``did``
for a signal) goes to the DLQ topic with reason ``vehicle_mismatch`` and the
ingest's DLQ headers; nothing else is checked here: a payload that is not
JSON, or not a telemetry message, goes on as it is and the ingest refuses it
into Bronze's rejects with its reason.

Acknowledgements and reconnections. A packet id names a message only on the
connection it came on: once Mosquitto has our PUBACK it may give the id to
another message. So a delivery that completes after its connection was lost
is not acknowledged on the next one; Mosquitto sends that message again on
the new connection (it is still unacknowledged in the session), and the new
copy is produced and acknowledged as any other.

The MQTT client is gmqtt (asyncio), chosen by measurement (benchmarks/bridge.py
and the bridge's note): per message it cost about half the CPU of paho-mqtt
on this machine. Its own manual acknowledgement (a task per message) is
bypassed: QoS 1 messages are taken in a plain function with their packet id,
and the PUBACKs Kafka's reports release are written together (``_hook``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import struct
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Optional

import gmqtt
import msgspec
from confluent_kafka import KafkaError, Producer

from lake.edge.bridge_metrics import serve_bridge_metrics
from lake_core.errors import ConfigError
from lake_schemas import RejectReason
from lake_schemas.topics import DLQ_HEADER_DETAIL, DLQ_HEADER_REASON, DLQ_HEADER_SOURCE

__all__ = ["BridgeOptions", "BridgeStats", "MqttKafkaBridge", "claimed_vehicle", "run_bridge", "SUBSCRIPTION"]

LOG = logging.getLogger("lake.bridge")

SUBSCRIPTION = "telemetry/+"
_TOPIC_PREFIX = "telemetry/"
_RETRY_PAUSE_S = 1.0  # after Kafka refused a message, before producing it again


@dataclass(frozen=True)
class BridgeOptions:
    bootstrap: str
    topic: str
    dlq_topic: str
    password: str = field(repr=False)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1884
    username: str = "lake.bridge"
    client_id: str = "lake-bridge"
    shared: Optional[str] = None  # the MQTT 5 shared-subscription group
    cafile: Optional[str] = None  # TLS to Mosquitto, verified with this CA
    receive_maximum: int = 5_000  # messages Mosquitto may have in flight to us, unacknowledged
    session_expiry_s: int = 7 * 24 * 3600  # how long Mosquitto keeps our session (and queues for it) while we are away
    log_every_s: float = 10.0
    health_file: Optional[str] = None  # touched every 5 s while connected to Mosquitto (container healthchecks)
    metrics_port: Optional[int] = None  # serve Prometheus metrics here (lake.edge.bridge_metrics)
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not 1 <= self.receive_maximum <= 65_535:
            raise ConfigError("--receive-maximum must be 1..65535 (MQTT 5 Receive Maximum)")
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise ConfigError("--session-expiry must be 0..4294967295 seconds")
        if self.shared is not None and (not self.shared or any(c in self.shared for c in "/+#")):
            raise ConfigError(f"--shared {self.shared!r}: a group name without '/', '+' or '#'")
        if not self.client_id:
            raise ConfigError("--client-id must not be empty")

    @property
    def subscription(self) -> str:
        return f"$share/{self.shared}/{SUBSCRIPTION}" if self.shared else SUBSCRIPTION


@dataclass
class BridgeStats:
    """Counters since the bridge started (what a ``/metrics`` endpoint would export)."""

    received: int = 0  # MQTT messages taken in
    redelivered: int = 0  # of those, marked DUP by Mosquitto (sent again after a lost connection)
    forwarded: int = 0  # delivered to the telemetry topic and acknowledged
    mismatched: int = 0  # delivered to the DLQ (vehicle_mismatch) and acknowledged
    acknowledged: int = 0  # PUBACKs written to Mosquitto
    kafka_retries: int = 0  # deliveries Kafka refused, produced again
    unacknowledged: int = 0  # delivered, but their connection was gone (or we were stopping): Mosquitto resends
    connects: int = 0  # MQTT connections made (1 + reconnections)

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class _Message(NamedTuple):
    topic: str
    value: bytes
    key: str
    headers: Optional[list]  # the DLQ's, or None for the telemetry topic
    mid: Optional[int]  # the MQTT packet id to acknowledge (None: QoS 0)
    generation: int  # the connection it came on


_pack_puback = struct.Struct("!BBH").pack  # MQTT 5 PUBACK, success, no properties: remaining length 2 (3.4.2.1)


class _Claim(msgspec.Struct):
    vehicle_id: Any = None
    did: Any = None


_CLAIM = msgspec.json.Decoder(_Claim)


def claimed_vehicle(payload: bytes) -> Optional[str]:
    """The vehicle a payload says it is from (``vehicle_id``, else a signal's ``did``); None when it names
    none or cannot be read (the ingest judges those)."""
    try:
        claim = _CLAIM.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    vid = claim.vehicle_id if claim.vehicle_id is not None else claim.did
    return vid if isinstance(vid, str) else None


class MqttKafkaBridge:
    def __init__(self, options: BridgeOptions):
        self.options = options
        self.stats = BridgeStats()
        self._producer = Producer(
            {
                "bootstrap.servers": options.bootstrap,
                "acks": "all",
                # Not idempotent: MQTT QoS 1 already redelivers (the lake removes duplicates by event_id and
                # orders by event time), and against the embedded broker idempotence cut the bridge from
                # 0.83x to 0.56x of a plain loop (benchmarks/bridge.py, same run each).
                "enable.idempotence": False,
                "linger.ms": 5,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 200_000,
                "message.timeout.ms": 120_000,
                "client.id": f"lake-bridge-{options.client_id}",
            }
        )
        self._generation = 0  # bumped at every (dis)connection: a packet id is only good on its own
        self._connected = asyncio.Event()
        self._stopping = False
        self._in_flight = 0  # produced, delivery not yet reported
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._client = gmqtt.Client(
            options.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=options.session_expiry_s,
            receive_maximum=options.receive_maximum,
        )
        self._client.set_auth_credentials(options.username, options.password)
        self._client.set_config({"reconnect_retries": gmqtt.constants.UNLIMITED_RECONNECTS, "reconnect_delay": 1})
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._acks: list[int] = []  # packet ids whose delivery Kafka reported, PUBACK not yet written
        self._pong = asyncio.Event()  # set by each PINGRESP (``_processed``)
        self._hook()
        self._client.on_subscribe = self._on_subscribe
        self._logged: Optional[dict] = None

    # -- MQTT side ------------------------------------------------------------------------------

    def _hook(self) -> None:
        """Take QoS 1 messages with their packet id, in a plain function.

        gmqtt's own manual acknowledgement runs ``on_message`` as a coroutine in a task per message
        and writes each PUBACK on its own: with the delivery future, half of the bridge's CPU
        (py-spy). The bridge replaces the handler's QoS 1 step (gmqtt 0.8's
        ``_handle_qos_1_publish_packet(mid, payload, topic, properties)``; the version is pinned in
        constraints.txt and the bridge tests exercise it) and writes the PUBACKs itself, in
        batches, once Kafka reported."""
        handler = self._client._package_handler
        if not callable(getattr(handler, "_handle_qos_1_publish_packet", None)):
            raise ConfigError("this gmqtt has no QoS 1 handler step to hook: install the version in constraints.txt")
        handler._handle_qos_1_publish_packet = self._on_qos1
        pingresp = handler._handle_pingresp_packet

        def on_pingresp(cmd: Any, packet: Any) -> None:
            pingresp(cmd, packet)
            self._pong.set()

        handler._handle_pingresp_packet = on_pingresp

    def _on_connect(self, client: Any, flags: Any, rc: Any, properties: Any) -> None:
        self._generation += 1
        self.stats.connects += 1
        self._connected.set()
        if self.stats.connects > 1:
            LOG.warning("reconnected to Mosquitto at %s:%s", self.options.mqtt_host, self.options.mqtt_port)

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        granted = list(qos) if isinstance(qos, (list, tuple)) else [qos]
        if any(q not in (1, 2) for q in granted):
            LOG.error("Mosquitto refused the subscription to %s (%s)", self.options.subscription, granted)
            self.stop()
            return
        LOG.info("subscribed to %s at QoS 1", self.options.subscription)

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        self._generation += 1
        self._connected.clear()
        if not self._stopping:
            LOG.warning("lost Mosquitto at %s:%s; reconnecting", self.options.mqtt_host, self.options.mqtt_port)

    def _on_qos1(self, mid: int, payload: bytes, topic: str, properties: dict) -> None:
        """gmqtt's QoS 1 hook, replaced (see ``_hook``): produce; the PUBACK goes out with Kafka's report."""
        if self._stopping:
            return  # not acknowledged: Mosquitto delivers it again to the next bridge
        self._take(topic, payload, properties, mid)

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict) -> None:
        """QoS 0 messages (a device that published at QoS 0): forwarded, nothing to acknowledge."""
        if not self._stopping:
            self._take(topic, payload, properties, None)

    def _take(self, topic: str, payload: bytes, properties: dict, mid: Optional[int]) -> None:
        self.stats.received += 1
        if properties.get("dup"):
            self.stats.redelivered += 1
        vehicle = topic[len(_TOPIC_PREFIX) :] if topic.startswith(_TOPIC_PREFIX) else topic
        claimed = claimed_vehicle(payload)
        if claimed is not None and claimed != vehicle:
            detail = f"payload names vehicle {claimed[:80]!r}, published on {topic}"
            headers: Optional[list] = [
                (DLQ_HEADER_REASON, RejectReason.VEHICLE_MISMATCH.value),
                (DLQ_HEADER_DETAIL, detail),
                (DLQ_HEADER_SOURCE, f"mqtt:{topic}"),
            ]
            message = _Message(self.options.dlq_topic, payload, vehicle, headers, mid, self._generation)
        else:
            message = _Message(self.options.topic, payload, vehicle, None, mid, self._generation)
        self._in_flight += 1
        self._produce(message)

    # -- Kafka side ------------------------------------------------------------------------------

    def _produce(self, message: _Message) -> None:
        report = partial(self._delivered, message)
        while True:
            try:
                self._producer.produce(message.topic, message.value, message.key, headers=message.headers,
                                       on_delivery=report)  # fmt: skip
                return
            except BufferError:  # librdkafka's queue is full: Kafka is slow or away; serve reports meanwhile
                self._producer.poll(0.05)

    def _delivered(self, message: _Message, err: Optional[KafkaError], _msg: Any) -> None:
        """Kafka's report (served by ``producer.poll``): queue the PUBACK, or produce again after a pause."""
        if err is not None and not self._stopping and message.generation == self._generation:
            self.stats.kafka_retries += 1
            LOG.warning("Kafka refused a message for %s (%s); producing it again", message.key, err)
            assert self._loop is not None
            self._loop.call_later(_RETRY_PAUSE_S, self._retry, message)
            return
        self._in_flight -= 1
        if err is not None or message.generation != self._generation:
            # its packet id meant this message only on the connection it came on: Mosquitto sends it again
            self.stats.unacknowledged += 1
            return
        if message.headers is None:
            self.stats.forwarded += 1
        else:
            self.stats.mismatched += 1
        if message.mid is not None:
            self._acks.append(message.mid)

    def _retry(self, message: _Message) -> None:
        if self._stopping or message.generation != self._generation:
            self._in_flight -= 1
            self.stats.unacknowledged += 1
            return
        self._produce(message)

    def _send_acks(self) -> None:
        """Every PUBACK due, in one write (a write per message was a third of the bridge's CPU, py-spy)."""
        acks, self._acks = self._acks, []
        connection = self._client._package_handler.current_connection
        if connection is None or connection.is_closing():
            self.stats.unacknowledged += len(acks)  # the connection went between report and write
            return
        connection._protocol.write_data(b"".join([_pack_puback(0x40, 2, mid) for mid in acks]))
        self.stats.acknowledged += len(acks)

    async def _poll_kafka(self) -> None:
        """Serve delivery reports and send the PUBACKs they release: often while messages are in flight."""
        while True:
            self._producer.poll(0)
            if self._acks:
                self._send_acks()
            # every 2 ms while messages wait: the producer lingers 5 ms anyway, and a tighter loop cost
            # 6% of the CPU (py-spy) for no throughput
            await asyncio.sleep(0.002 if self._in_flight else 0.05)

    # -- the whole ---------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self) -> None:
        """Stop taking messages; ``run`` then finishes those in flight and returns."""
        if not self._stopping:
            LOG.info("stopping: finishing the messages in flight")
        self._stopping = True
        self._stop_event.set()

    async def run(self) -> BridgeStats:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        poller = asyncio.create_task(self._poll_kafka())
        reporter = asyncio.create_task(self._report())
        try:
            await self._connect()
            self._client.subscribe(self.options.subscription, qos=1)
            LOG.info(
                "bridge %s: %s at %s:%s -> Kafka %s topic %s",
                self.options.client_id,
                self.options.subscription,
                self.options.mqtt_host,
                self.options.mqtt_port,
                self.options.bootstrap,
                self.options.topic,
            )
            await self._stop_event.wait()
            await self._drain()
            await self._client.disconnect()
        finally:
            poller.cancel()
            reporter.cancel()
            self._log_stats("stopped")
        return self.stats

    async def _connect(self) -> None:
        ssl_context = None
        if self.options.cafile:
            ssl_context = ssl.create_default_context(cafile=self.options.cafile)
        while not self._stopping:
            LOG.info("connecting to Mosquitto at %s:%s", self.options.mqtt_host, self.options.mqtt_port)
            try:
                await self._client.connect(
                    self.options.mqtt_host,
                    self.options.mqtt_port,
                    ssl=ssl_context or False,
                    version=gmqtt.constants.MQTTv50,
                )
                return
            except (OSError, asyncio.TimeoutError) as exc:
                LOG.warning("Mosquitto at %s:%s: %s; trying again", self.options.mqtt_host, self.options.mqtt_port, exc)
                try:
                    await asyncio.wait_for(self._stop_event.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

    async def _drain(self, timeout_s: float = 30.0) -> None:
        """Wait for Kafka to report on every message in flight, and for their PUBACKs to be queued."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._producer.poll(0.01)
            if self._acks:
                self._send_acks()
            await asyncio.sleep(0)
        self._producer.flush(max(0.0, deadline - time.monotonic()))
        if self._acks:
            self._send_acks()
        await self._written(deadline)
        await self._processed(deadline)
        if self._in_flight:
            LOG.error("%d message(s) still unconfirmed by Kafka: Mosquitto will deliver them again", self._in_flight)

    async def _written(self, deadline: float) -> None:
        """Wait until the socket took every PUBACK: a write the kernel could not take at once waits in
        the transport's buffer, and a stop that closed the connection over it would leave Mosquitto
        to deliver those messages again (duplicates after a graceful stop)."""
        connection = self._client._package_handler.current_connection
        transport = getattr(getattr(connection, "_protocol", None), "_transport", None)
        while transport is not None and transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _processed(self, deadline: float) -> None:
        """Wait until Mosquitto has read our last PUBACKs: a PINGREQ after them, answered.

        Mosquitto keeps sending while we stop (those messages are left unacknowledged on purpose); a
        socket closed with unread data in it is reset, and a reset makes the peer discard what it
        has not read yet, our last PUBACKs included. Mosquitto reads in order, so its PINGRESP
        says every PUBACK before the PINGREQ was taken."""
        connection = self._client._package_handler.current_connection
        if connection is None or connection.is_closing():
            return
        self._pong.clear()
        connection._send_ping_request()
        try:
            await asyncio.wait_for(self._pong.wait(), max(0.1, min(5.0, deadline - time.monotonic())))
        except asyncio.TimeoutError:
            LOG.warning("Mosquitto did not answer a ping before the stop: some messages may come again")

    async def _report(self) -> None:
        next_log = time.monotonic() + self.options.log_every_s
        while True:
            await asyncio.sleep(min(5.0, self.options.log_every_s))
            if self.options.health_file and self._connected.is_set():
                # a stale file says: not connected, or the event loop is stuck
                Path(self.options.health_file).touch()
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + self.options.log_every_s
                self._log_stats("running")

    def _log_stats(self, state: str) -> None:
        s = self.stats
        if state == "running" and self._logged == s.snapshot():
            return  # nothing happened since the last line
        self._logged = s.snapshot()
        LOG.info(
            "bridge %s: received %d (redelivered %d), forwarded %d, mismatched %d, acknowledged %d, kafka retries %d, "
            "in flight %d",
            state,
            s.received,
            s.redelivered,
            s.forwarded,
            s.mismatched,
            s.acknowledged,
            s.kafka_retries,
            self._in_flight,
        )


def run_bridge(options: BridgeOptions) -> BridgeStats:
    """Run until SIGTERM or SIGINT, then stop gracefully (finish in-flight messages, acknowledge, disconnect)."""

    async def main() -> BridgeStats:
        bridge = MqttKafkaBridge(options)
        if options.metrics_port is not None:
            serve_bridge_metrics(bridge, options.metrics_port, options.metrics_host)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.stop)
        return await bridge.run()

    # uvloop when installed (uvicorn[standard] brings it): gmqtt makes a task and a socket write per
    # message, and the event loop's own cost was half of the bridge's CPU on asyncio's (py-spy).
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
