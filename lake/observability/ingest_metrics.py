"""``lake ingest --metrics-port``: the ingest's Prometheus metrics.

Fed by the pass reports (``PassReport``: the Beam counters of namespace
``lake.ingest``), so a counter advances when a pass *commits*: what it
counts is in Bronze. Consumer lag is computed when scraped: each partition's
end offset (asked of the broker then) minus the offset Bronze resumes from
(as of the last pass). Rendered every second and served by a child process
(``exposition_server``): a scrape never waits for the busy interpreter.

Series (base units):
- ``lake_ingest_records_total``, ``lake_ingest_bytes_total``, ``lake_ingest_bronze_rows_total``
- ``lake_ingest_rejects_total{reason}``, ``lake_ingest_dlq_produced_total``
- ``lake_ingest_files_written_total``, ``lake_ingest_hours_closed_total``
- ``lake_ingest_passes_total``, ``lake_ingest_pass_duration_seconds`` (histogram)
- ``lake_ingest_last_pass_timestamp_seconds`` (wall clock; "ingest down" when it stops moving)
- ``lake_ingest_oldest_open_hour_timestamp_seconds``, ``lake_ingest_open_hours``
- ``lake_ingest_consumer_lag_records{partition}``
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

from beam_pipelines.ingest.bronze_state import BronzeStore
from beam_pipelines.ingest.bronze_writer import REJECT_COUNTER_PREFIX
from lake.observability.exposition_server import ExpositionServer
from lake_core.kafka_admin import quiet_logger

__all__ = ["IngestMetrics"]

disable_created_metrics()

ENDS_TTL_S = 5.0  # the broker is asked for end offsets at most this often
PASS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200)


class _Lag(Collector):
    """Lag per partition and open hours, at scrape time: the broker's end offsets (asked then) and Bronze's
    state (re-listed when older than ``state_ttl_s``, and after each pass): right on Flink/Dataflow too,
    where the driver sees no passes."""

    def __init__(self, lake_root: str, bootstrap: str, topic: str, state_ttl_s: float = 30.0):
        self._lake_root, self._bootstrap, self._topic = lake_root, bootstrap, topic
        self._ttl = state_ttl_s
        self.partitions = 0
        self.next_offsets: dict[int, int] = {}
        self.open_hours: set[int] = set()
        self._state_at = -1e9
        self._ends_cache: dict[int, int] = {}
        self._ends_at = -1e9
        self._consumer: Any = None
        self._lock = threading.Lock()

    def refresh(self, partitions: Optional[int] = None) -> None:
        if partitions:
            self.partitions = partitions
        state = BronzeStore(self._lake_root).state(max(self.partitions, 1))
        self.next_offsets, self.open_hours = dict(state.next_offsets), set(state.open_hours)
        self._state_at = time.monotonic()

    def _ends(self) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415 - librdkafka, only once scraped

        if self._consumer is None:
            self._consumer = Consumer(
                {"bootstrap.servers": self._bootstrap, "group.id": "lake-ingest-metrics"}, logger=quiet_logger()
            )
        ends = {}
        for partition in self.next_offsets:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, partition), timeout=2)
            ends[partition] = high
        return ends

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._state_at > self._ttl:
                with contextlib.suppress(Exception):  # a lake unreadable for a moment: last state stays
                    self.refresh()
            if time.monotonic() - self._ends_at > ENDS_TTL_S:
                try:
                    self._ends_cache = self._ends()
                except Exception:  # the broker away: no lag series (the rules see it as absent)
                    self._ends_cache = {}
                self._ends_at = time.monotonic()
            ends = self._ends_cache
            next_offsets, open_hours = dict(self.next_offsets), set(self.open_hours)
        lag = GaugeMetricFamily(
            "lake_ingest_consumer_lag_records",
            "Records in the topic that Bronze does not hold yet (end offset minus resume offset).",
            labels=["partition"],
        )
        for partition, end in sorted(ends.items()):
            lag.add_metric([str(partition)], max(0, end - next_offsets.get(partition, 0)))
        yield lag
        count = GaugeMetricFamily("lake_ingest_open_hours", "Bronze hours with data, not closed yet.")
        count.add_metric([], len(open_hours))
        yield count
        oldest = GaugeMetricFamily(
            "lake_ingest_oldest_open_hour_timestamp_seconds", "Start of the oldest Bronze hour still open."
        )
        if open_hours:
            oldest.add_metric([], min(open_hours) / 1000)
        yield oldest


class IngestMetrics:
    def __init__(self, lake_root: str, bootstrap: str, topic: str, partitions: Optional[int] = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self._lake_root = lake_root
        self._partitions = partitions
        self.records = Counter("lake_ingest_records", "Kafka records committed to Bronze or rejects.", registry=r)
        self.bytes = Counter("lake_ingest_bytes", "Bytes of those records' values.", registry=r)
        self.bronze_rows = Counter("lake_ingest_bronze_rows", "Rows committed to Bronze.", registry=r)
        self.rejects = Counter("lake_ingest_rejects", "Rejected records, by reason.", ["reason"], registry=r)
        self.dlq = Counter("lake_ingest_dlq_produced", "Rejects delivered to the DLQ topic.", registry=r)
        self.files = Counter("lake_ingest_files_written", "Bronze and rejects files written.", registry=r)
        self.hours = Counter("lake_ingest_hours_closed", "Bronze hours closed (_COMPLETE written).", registry=r)
        self.passes = Counter("lake_ingest_passes", "Passes run.", registry=r)
        self.pass_seconds = Histogram(
            "lake_ingest_pass_duration_seconds", "Duration of a pass.", buckets=PASS_BUCKETS, registry=r
        )
        self.last_pass = Gauge("lake_ingest_last_pass_timestamp_seconds", "When the last pass ended.", registry=r)
        self.started = Gauge("lake_ingest_start_timestamp_seconds", "When this ingest started.", registry=r)
        self.started.set(time.time())
        self._lag = _Lag(lake_root, bootstrap, topic)
        r.register(self._lag)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Served by a child process from an exposition rendered every second (``exposition_server``)."""
        self._server = ExpositionServer(lambda: generate_latest(self.registry), port, host)
        self._server.start()

    def pass_done(self, _number: int, report: Any) -> None:
        """The ``progress`` hook of ``run_ingest``: one pass's report."""
        counters = report.counters
        self.records.inc(report.records)
        self.bytes.inc(counters.get("bytes", 0))
        self.bronze_rows.inc(report.bronze_rows)
        self.files.inc(report.files)
        self.dlq.inc(counters.get("dlq_produced", 0))
        for name, count in counters.items():
            if name.startswith(REJECT_COUNTER_PREFIX):
                self.rejects.labels(name[len(REJECT_COUNTER_PREFIX) :]).inc(count)
        self.hours.inc(len(report.closed_hours))
        self.passes.inc()
        self.pass_seconds.observe(report.seconds)
        self.last_pass.set(time.time())
        self.refresh_state(len(report.ended_by) or self._partitions or 1)

    def refresh_state(self, partitions: int) -> None:
        """Open hours and resume offsets, as Bronze holds them now (what the next pass starts from)."""
        with self._lag._lock:
            self._lag.refresh(partitions)
