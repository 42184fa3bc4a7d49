"""A simulated fleet over MQTT, each vehicle as itself (contract section 8).

Every vehicle opens its own MQTT 5 connection with username = its vehicle
id and password = its secret, and publishes at QoS 1 to
``telemetry/<vehicle id>``, the only topic the broker's ACL lets it write.
The send time travels as the user property ``send_ts_ms`` (MQTT has no
record timestamp; the bridge uses it for Kafka's).

One network thread per vehicle (paho's ``loop_start``): fine for the
hundreds of vehicles a laptop simulates; a load test of tens of thousands
of devices wants several simulator processes.
"""

from __future__ import annotations

import threading
from typing import Mapping, Optional

from edge_client.device_keys import secret_for
from edge_client.errors import DeliveryError, UplinkUnavailableError
from edge_client.senders import wait_for_pubacks

__all__ = ["FleetMqttSender"]


class _Device:
    """One vehicle's connection and its publish accounting."""

    def __init__(self, fleet: FleetMqttSender, vehicle_id: str, secret: str):
        mqtt = fleet._mqtt
        self.vehicle_id = vehicle_id
        self.connected = threading.Event()
        self.refused: Optional[str] = None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{vehicle_id}", protocol=mqtt.MQTTv5)
        client.username_pw_set(vehicle_id, secret)
        if fleet.tls_ca:
            client.tls_set(ca_certs=fleet.tls_ca)
        client.max_inflight_messages_set(200)
        client.on_connect = self._on_connect
        client.on_publish = fleet._on_publish
        self.client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.refused = str(reason_code) if reason_code.is_failure else None
        self.connected.set()

    def connect(self, host: str, port: int, timeout_s: float) -> None:
        try:
            self.client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise UplinkUnavailableError(f"no MQTT broker answers at {host}:{port} ({exc})") from None
        self.client.loop_start()
        if not self.connected.wait(timeout_s) or self.refused:
            self.client.loop_stop()
            reason = self.refused or f"no answer within {timeout_s:g} s"
            raise UplinkUnavailableError(f"MQTT broker at {host}:{port} refused vehicle {self.vehicle_id} ({reason})")


class FleetMqttSender:
    """``send(key=vehicle id, …)`` publishes as that vehicle; ``flush`` waits for every PUBACK."""

    MAX_UNACKED = 20_000  # beyond this, ``send`` waits: the broker sets the pace

    def __init__(
        self,
        host: str,
        port: int,
        keys: Mapping[str, str],
        *,
        tls_ca: Optional[str] = None,
        topic_prefix: str = "telemetry",
        connect_timeout_s: float = 10.0,
    ):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._mqtt, self._Properties, self._PUBLISH = mqtt, Properties, PacketTypes.PUBLISH
        self.host, self.port, self.address = host, port, f"{host}:{port}"
        self.keys = keys
        self.tls_ca = tls_ca
        self.topic_prefix = topic_prefix.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.sent = 0
        self.acked = 0
        self.refused: dict[str, int] = {}  # PUBACK reason -> count (e.g. "Not authorized")
        self._acks = threading.Condition()
        self._devices: dict[str, _Device] = {}

    def _device(self, vehicle_id: str) -> _Device:
        device = self._devices.get(vehicle_id)
        if device is None:
            device = _Device(self, vehicle_id, secret_for(self.keys, vehicle_id))
            device.connect(self.host, self.port, self.connect_timeout_s)
            self._devices[vehicle_id] = device
        return device

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acks:
            self.acked += 1
            if reason_code.is_failure:
                self.refused[str(reason_code)] = self.refused.get(str(reason_code), 0) + 1
            self._acks.notify_all()

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        if self.sent - self.acked >= self.MAX_UNACKED:
            self._wait_for_acks(self.sent - self.MAX_UNACKED // 2)
        vehicle_id = key.decode()
        device = self._device(vehicle_id)
        props = self._Properties(self._PUBLISH)
        props.UserProperty = ("send_ts_ms", str(timestamp_ms))
        info = device.client.publish(f"{self.topic_prefix}/{vehicle_id}", value, qos=1, properties=props)
        queued = info.rc == self._mqtt.MQTT_ERR_NO_CONN  # QoS 1: paho sends it when it reconnects
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS and not queued:
            raise UplinkUnavailableError(
                f"MQTT publish for {vehicle_id} to {self.address} failed: {self._mqtt.error_string(info.rc)}"
            )
        self.sent += 1

    def _wait_for_acks(self, target: int, timeout_s: float = 60.0) -> None:
        wait_for_pubacks(self, target, timeout_s)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Return once Mosquitto acknowledged (PUBACK) every message sent; ``UplinkUnavailableError``
        after ``timeout_s``. Refusals (e.g. an ACL denial) are counted and reported by ``close``."""
        self._wait_for_acks(self.sent, timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        try:
            self.flush(timeout_s)
        finally:
            for device in self._devices.values():
                device.client.disconnect()
                device.client.loop_stop()
            self._devices.clear()
        if self.refused:
            reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(self.refused.items()))
            raise DeliveryError(f"the MQTT broker at {self.address} refused {reasons} of {self.sent:,} messages")
