"""``lake bridge mqtt --metrics-port``: the bridge's counters (``BridgeStats``) for Prometheus.

Read when scraped from the running bridge (one event loop, plain ints: a
scrape sees a consistent enough snapshot), served by ``prometheus_client``'s
HTTP server in a daemon thread.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["serve_bridge_metrics"]

disable_created_metrics()

_COUNTERS = {
    "received": ("lake_bridge_messages_received", "MQTT messages taken in (redeliveries included)."),
    "redelivered": ("lake_bridge_messages_redelivered", "Of those, sent again by Mosquitto (DUP)."),
    "forwarded": ("lake_bridge_messages_forwarded", "Delivered to the telemetry topic and acknowledged."),
    "mismatched": ("lake_bridge_messages_mismatched", "Sent to the DLQ: payload vehicle differs from the topic's."),
    "acknowledged": (
        "lake_bridge_messages_acknowledged",
        "PUBACKs written to Mosquitto (after Kafka's delivery report).",
    ),
    "kafka_retries": ("lake_bridge_kafka_retries", "Deliveries Kafka refused, produced again."),
    "unacknowledged": ("lake_bridge_messages_unacknowledged", "Delivered but their connection was gone."),
    "connects": ("lake_bridge_mqtt_connects", "MQTT connections made (1 + reconnections)."),
}


class _BridgeCollector(Collector):
    def __init__(self, bridge: Any):
        self._bridge = bridge

    def collect(self) -> Iterator[Any]:
        stats = self._bridge.stats.snapshot()
        for field, (name, text) in _COUNTERS.items():
            family = CounterMetricFamily(name, text)
            family.add_metric([], stats[field])
            yield family
        in_flight = GaugeMetricFamily("lake_bridge_in_flight", "Messages produced, not yet confirmed by Kafka.")
        in_flight.add_metric([], self._bridge.in_flight)
        yield in_flight
        connected = GaugeMetricFamily("lake_bridge_connected", "1 while connected to Mosquitto.")
        connected.add_metric([], 1 if self._bridge.connected else 0)
        yield connected


def serve_bridge_metrics(bridge: Any, port: int, host: str = "127.0.0.1") -> None:
    registry = CollectorRegistry()
    registry.register(_BridgeCollector(bridge))
    start_http_server(port, addr=host, registry=registry)
