"""``lake stream --metrics-port``: the hot path's Prometheus metrics.

Pass counters come from the stream's pass reports; the rest is read from
the hot store when scraped (one short read-only query per family), so it
holds whichever stream process wrote it:

- ``lake_stream_records_total``, ``lake_stream_commits_total``, ``lake_stream_alert_events_total``,
  ``lake_stream_pg_waits_total`` (PostgreSQL unavailable: the stream waited), ``lake_stream_passes_total``
- ``lake_stream_pass_duration_seconds``, ``lake_stream_pg_commit_seconds`` (time the pass spent
  committing to PostgreSQL, from its ``commit_ms`` counter, per commit)
- ``lake_stream_end_to_end_seconds``: at each pass's commit, the wall clock minus the Kafka time of the
  newest record that commit made visible (``max(last_seen_at)``): how old the freshest row is when it lands
- ``lake_stream_last_pass_timestamp_seconds``
- scraped: ``lake_stream_alerts{rule,state}``, ``lake_stream_state_vehicles``,
  ``lake_stream_consumer_lag_records{partition}`` (end offsets minus ``hot.stream_offsets``)
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator, Optional

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lake.observability.exposition_server import ExpositionServer
from lake_core import hot_store
from lake_core.kafka_admin import quiet_logger

__all__ = ["StreamMetrics"]

disable_created_metrics()

LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 900)


class _HotCollector(Collector):
    def __init__(self, dsn: str, bootstrap: str, topic: str):
        self._dsn, self._bootstrap, self._topic = dsn, bootstrap, topic
        self._lock = threading.Lock()
        self._consumer: Any = None

    def _rows(self) -> tuple[list, int, dict]:
        with contextlib.closing(hot_store.connect(self._dsn, timeout=2)) as conn, conn.cursor() as cur:
            cur.execute("SET statement_timeout = 2000")
            cur.execute(
                "SELECT rule, CASE WHEN resolved_at IS NULL THEN 'open' ELSE 'resolved' END, count(*) "
                "FROM hot.alerts GROUP BY 1, 2"
            )
            alerts = cur.fetchall()
            cur.execute("SELECT count(*) FROM hot.live_vehicle_state")
            (vehicles,) = cur.fetchone()
            cur.execute("SELECT partition, next_offset FROM hot.stream_offsets WHERE topic = %s", [self._topic])
            offsets = dict(cur.fetchall())
            conn.rollback()
        return alerts, vehicles, offsets

    def _ends(self, partitions: list[int]) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415 - librdkafka, only once scraped

        with self._lock:
            if self._consumer is None:
                self._consumer = Consumer(
                    {"bootstrap.servers": self._bootstrap, "group.id": "lake-stream-metrics"}, logger=quiet_logger()
                )
            return {
                p: self._consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=2)[1]
                for p in partitions
            }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        alerts = GaugeMetricFamily(
            "lake_stream_alerts", "Alerts in the hot store, by rule and state.", labels=["rule", "state"]
        )
        state = GaugeMetricFamily("lake_stream_state_vehicles", "Vehicles in live_vehicle_state.")
        lag = GaugeMetricFamily(
            "lake_stream_consumer_lag_records", "Records the hot path has not consumed yet.", labels=["partition"]
        )
        try:
            rows, vehicles, offsets = self._rows()
        except Exception:  # PostgreSQL away: those families are empty this scrape (lake_stream_pg_waits tells)
            rows, vehicles, offsets = [], None, {}
        for rule, st, count in rows:
            alerts.add_metric([rule, st], count)
        if vehicles is not None:
            state.add_metric([], vehicles)
        try:
            ends = self._ends(sorted(offsets))
        except Exception:
            ends = {}
        for partition, end in sorted(ends.items()):
            lag.add_metric([str(partition)], max(0, end - offsets[partition]))
        yield alerts
        yield state
        yield lag


class StreamMetrics:
    def __init__(self, dsn: str, bootstrap: str, topic: str):
        self._dsn = dsn
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter("lake_stream_records", "Kafka records the hot path committed.", registry=r)
        self.commits = Counter("lake_stream_commits", "PostgreSQL commits (outputs with offsets).", registry=r)
        self.alert_events = Counter("lake_stream_alert_events", "Alert opens and resolves.", registry=r)
        self.pg_waits = Counter("lake_stream_pg_waits", "Times the stream waited for PostgreSQL.", registry=r)
        self.passes = Counter("lake_stream_passes", "Passes run.", registry=r)
        self.pass_seconds = Histogram(
            "lake_stream_pass_duration_seconds", "Duration of a pass.", buckets=(1, 5, 15, 30, 60, 300), registry=r
        )
        self.commit_seconds = Histogram(
            "lake_stream_pg_commit_seconds", "Time per PostgreSQL commit (pass average).", registry=r
        )
        self.end_to_end = Histogram(
            "lake_stream_end_to_end_seconds",
            "At each commit: wall clock minus the Kafka time of the newest record it made visible.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_pass = Gauge("lake_stream_last_pass_timestamp_seconds", "When the last pass ended.", registry=r)
        r.register(_HotCollector(dsn, bootstrap, topic))

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Served by a child process from an exposition rendered every second (``exposition_server``)."""
        self._server = ExpositionServer(lambda: generate_latest(self.registry), port, host)
        self._server.start()

    def _newest_seen_s(self) -> Optional[float]:
        try:
            with contextlib.closing(hot_store.connect(self._dsn, timeout=2)) as conn, conn.cursor() as cur:
                cur.execute("SELECT extract(epoch FROM max(last_seen_at)) FROM hot.live_vehicle_state")
                (newest,) = cur.fetchone()
                conn.rollback()
        except Exception:
            return None
        return None if newest is None else float(newest)

    def pass_done(self, _number: int, one: Any) -> None:
        """The ``progress`` hook of ``run_stream``: one pass's report."""
        self.records.inc(one.records)
        self.commits.inc(one.commits)
        self.alert_events.inc(one.alert_events)
        self.pg_waits.inc(one.pg_waits)
        self.passes.inc()
        self.pass_seconds.observe(one.seconds)
        commit_ms = one.busy_ms.get("commit_ms")
        if commit_ms is not None and one.commits:
            self.commit_seconds.observe(commit_ms / 1000 / one.commits)
        if one.records:
            newest = self._newest_seen_s()
            if newest is not None:
                self.end_to_end.observe(max(0.0, time.time() - newest))
        self.last_pass.set(time.time())
