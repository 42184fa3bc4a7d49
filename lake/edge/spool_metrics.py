"""``lake simulate --metrics-port``: the edge's own view, for Prometheus: spool depth and the uplink.

What a vehicle (or a gateway box in front of many) would report: how many
messages wait in its spool unconfirmed (the depth an operator watches when a
region loses coverage), the spool file's size against its bound, whether the
uplink is up, and the torn stretches skipped when the spool was opened.
Read when scraped from the running sender (plain ints and properties; the
simulator is one thread), served by ``prometheus_client``'s HTTP server in a
daemon thread.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["serve_spool_metrics"]

disable_created_metrics()


class _SpoolCollector(Collector):
    def __init__(self, sender: Any):
        self._sender = sender  # an edge_client.offline_buffer.SpoolingSender

    def collect(self) -> Iterator[Any]:
        sender = self._sender
        for name, text, value in (
            (
                "lake_edge_spool_messages",
                "Messages in the spool the uplink has not confirmed (spool depth).",
                sender.backlog,
            ),
            ("lake_edge_spool_bytes", "Size of the spool file.", sender.spool_bytes),
            (
                "lake_edge_spool_max_bytes",
                "The spool's bound; when full, the oldest records give way.",
                sender.spool_max_bytes,
            ),
            (
                "lake_edge_uplink_up",
                "0 once the spool declared the uplink down (a send failed or a confirmation timed out) "
                "until a replay is confirmed.",
                1 if sender.uplink_up else 0,
            ),
        ):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            yield gauge
        for name, text, value in (
            ("lake_edge_messages_spooled", "Messages this process appended to the spool.", sender.spooled),
            (
                "lake_edge_spool_torn_skipped",
                "Damaged stretches skipped when the spool was opened.",
                sender.skipped_torn,
            ),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], value)
            yield counter


def serve_spool_metrics(sender: Any, port: int, host: str = "127.0.0.1") -> None:
    registry = CollectorRegistry()
    registry.register(_SpoolCollector(sender))
    start_http_server(port, addr=host, registry=registry)
