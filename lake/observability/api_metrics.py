"""The read API's ``/metrics``: its own requests, and the lake's freshness as gauges.

Freshness is the lake's (``freshness.lake_freshness``), computed when
scraped and kept ``cache_s`` seconds (listing Bronze and reading Delta logs
is not free, and Prometheus scrapes every 15 s), so one ``lake serve``
exports the numbers the alert rules of ``ops/prometheus/lake_rules.yml``
watch: the oldest open Bronze hour, each layer's last publication and how
far behind the newest Kafka record each layer is.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from lake.observability.freshness import LayerFreshness, lake_freshness, newest_kafka_record_ms

__all__ = ["ApiMetrics", "FreshnessCollector"]

disable_created_metrics()  # no *_created series: they double every counter's series for nothing we use

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


class FreshnessCollector(Collector):
    def __init__(self, lake_root: str, hot: Any = None, kafka: Optional[tuple[str, str]] = None, cache_s: float = 5.0):
        self._lake_root = lake_root
        self._hot = hot  # a HotStore, or None
        self._kafka = kafka  # (bootstrap, topic), or None
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] = (-1e9, {})
        self._thread: Optional[threading.Thread] = None

    def snapshot(self) -> dict:
        """``{"newest_kafka_ms", "layers": [LayerFreshness...], "errors": [...]}``, at most ``cache_s`` old.

        Computed by a background thread every ``cache_s`` seconds (the first call computes it), so a
        scrape or ``/v1/stats`` never waits for listing Bronze or asking the broker."""
        with self._lock:
            if self._thread is None:
                self._cached = (time.monotonic(), self._compute())
                self._thread = threading.Thread(target=self._refresh_loop, name="freshness", daemon=True)
                self._thread.start()
            return self._cached[1]

    def _refresh_loop(self) -> None:
        while True:
            time.sleep(self._cache_s)
            value = self._compute()
            with self._lock:
                self._cached = (time.monotonic(), value)

    def _compute(self) -> dict:
        errors: list[str] = []
        newest = None
        if self._kafka is not None:
            try:
                newest = newest_kafka_record_ms(*self._kafka, timeout=2.0)
            except Exception as exc:  # a broker away must not break the scrape
                errors.append(f"kafka: {exc}")
        hot = None
        if self._hot is not None:
            try:
                hot = self._hot.stats(int(time.time() * 1000) - 3_600_000)
            except Exception as exc:
                errors.append(f"hot store: {exc}")
        try:
            layers = lake_freshness(self._lake_root, newest, hot)
        except Exception as exc:
            errors.append(f"lake: {exc}")
            layers = []
        return {"newest_kafka_ms": newest, "layers": layers, "errors": errors}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot()
        layers: list[LayerFreshness] = snap["layers"]
        newest = GaugeMetricFamily(
            "lake_kafka_newest_record_timestamp_seconds", "Timestamp of the newest record of the telemetry topic."
        )
        if snap["newest_kafka_ms"] is not None:
            newest.add_metric([], snap["newest_kafka_ms"] / 1000)
        yield newest
        published = GaugeMetricFamily(
            "lake_layer_published_until_timestamp_seconds",
            "Each layer holds every record before this time (Bronze: end of the newest complete hour).",
            labels=["layer"],
        )
        commit = GaugeMetricFamily(
            "lake_layer_last_commit_timestamp_seconds", "Wall clock of the layer's last write.", labels=["layer"]
        )
        behind = GaugeMetricFamily(
            "lake_layer_behind_seconds", "Newest Kafka record minus what the layer published up to.", labels=["layer"]
        )
        for layer in layers:
            if layer.published_until_ms is not None:
                published.add_metric([layer.layer], layer.published_until_ms / 1000)
            if layer.last_commit_s is not None:
                commit.add_metric([layer.layer], layer.last_commit_s)
            if layer.behind_s is not None:
                behind.add_metric([layer.layer], layer.behind_s)
        yield published
        yield commit
        yield behind
        bronze = next((layer for layer in layers if layer.layer == "bronze"), None)
        oldest = GaugeMetricFamily(
            "lake_bronze_oldest_open_hour_timestamp_seconds", "Start of the oldest Bronze hour without _COMPLETE."
        )
        open_hours = GaugeMetricFamily("lake_bronze_open_hours", "Bronze hours with data and no _COMPLETE.")
        if bronze is not None:
            if bronze.oldest_open_ms is not None:
                oldest.add_metric([], bronze.oldest_open_ms / 1000)
            open_hours.add_metric([], bronze.open_hours)
        yield oldest
        yield open_hours
        errors = GaugeMetricFamily("lake_freshness_errors", "Sources freshness could not read at the last look.")
        errors.add_metric([], len(snap["errors"]))
        yield errors


class ApiMetrics:
    def __init__(self, lake_root: str, hot: Any = None, kafka: Optional[tuple[str, str]] = None):
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "lake_api_requests",
            "Read API requests answered, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "lake_api_request_duration_seconds",
            "Read API latency, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.freshness = FreshnessCollector(lake_root, hot, kafka)
        self.registry.register(self.freshness)

    def request(self, route: str, status: int, seconds: float) -> None:
        self._requests.labels(route, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def lake_snapshot(self) -> dict:
        snap = self.freshness.snapshot()
        return {
            "newest_kafka_ms": snap["newest_kafka_ms"],
            "freshness": [layer.as_dict() for layer in snap["layers"]],
            "freshness_errors": snap["errors"],
        }

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
