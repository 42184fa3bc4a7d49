"""``WriteBronze``: commit each partition's share of a pass as Parquet files.

Per Kafka partition, the batches a pass read are split by hour (the Kafka
record timestamp, or the earliest open hour when that hour is already
complete) and by table (Bronze, rejects). Every file of that group carries the
group's offset range and its size (``i of n``) in its name; each appears
atomically. A pass killed in the middle leaves an incomplete group that the
next start deletes and reads again (``BronzeStore.recover``).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.windowed_value import WindowedValue

from lake_schemas import BronzeFileName
from lake_schemas.topics import DLQ_HEADER_DETAIL, DLQ_HEADER_REASON, DLQ_HEADER_SOURCE

from .bronze_state import IN_PROGRESS_SUFFIX, WATERMARK_KEY, BronzeStore
from .validate import ValidatedBatch

__all__ = ["WriteBronze", "CommittedGroup", "commit_partition"]

LOG = logging.getLogger(__name__)
NAMESPACE = "lake.ingest"
DICTIONARY_COLUMNS = ["kafka_topic", "vehicle_id", "key", "reason"]


class CommittedGroup(NamedTuple):
    partition: int
    first_offset: int
    last_offset: int
    files: list
    bronze_rows: int
    reject_rows: int
    watermark_ms: int


def _hour_column(table: pa.Table, open_from_ms: Optional[int]) -> pa.Array:
    hours = pc.floor_temporal(table["ingest_ts"], unit="hour")
    if open_from_ms is not None:  # a complete hour never changes: late records go to the earliest open one
        hours = pc.max_element_wise(hours.cast(pa.int64()), pa.scalar(open_from_ms, pa.int64())).cast(hours.type)
    return hours.combine_chunks() if isinstance(hours, pa.ChunkedArray) else hours


def _split_by_hour(table: pa.Table, open_from_ms: Optional[int]) -> list:
    if table.num_rows == 0:
        return []
    hours = _hour_column(table, open_from_ms)
    distinct = pc.unique(hours).to_pylist()
    if len(distinct) == 1:
        return [(int(distinct[0].timestamp() * 1000), table)]
    out = []
    for hour in sorted(distinct):
        out.append((int(hour.timestamp() * 1000), table.filter(pc.equal(hours, pa.scalar(hour, hours.type)))))
    return out


def commit_partition(store: BronzeStore, partition: int, batches: Iterable[ValidatedBatch],
                     open_from_ms: Optional[int], previous_watermark_ms: int = -1) -> Optional[CommittedGroup]:
    """Write one partition's group of files; return what was committed."""
    batches = sorted(batches, key=lambda b: b.first_offset)
    if not batches:
        return None
    first, last = batches[0].first_offset, max(b.last_offset for b in batches)
    bronze = pa.concat_tables([b.bronze for b in batches])
    rejects = pa.concat_tables([b.rejects for b in batches])
    watermark = max(previous_watermark_ms, _max_ms(bronze), _max_ms(rejects))
    parts = [("bronze_telemetry", h, t) for h, t in _split_by_hour(bronze, open_from_ms)]
    parts += [("bronze_rejects", h, t) for h, t in _split_by_hour(rejects, open_from_ms)]
    files = []
    for index, (table_name, hour_ms, table) in enumerate(parts, start=1):
        name = str(BronzeFileName(partition, first, last, index, len(parts)))
        folder = store.hour_dir(table_name, hour_ms)
        path = f"{folder}/{name}"
        _write_parquet(store, folder, path, table.replace_schema_metadata(
            {**(table.schema.metadata or {}), WATERMARK_KEY: str(watermark).encode()}))
        files.append(path)
    return CommittedGroup(partition, first, last, files, bronze.num_rows, rejects.num_rows, watermark)


def _max_ms(table: pa.Table) -> int:
    if table.num_rows == 0:
        return -1
    return int(pc.max(table["ingest_ts"]).cast(pa.int64()).as_py())


def _write_parquet(store: BronzeStore, folder: str, path: str, table: pa.Table) -> None:
    store.fs.create_dir(folder, recursive=True)
    local = store.paths.root.find("://") < 0
    target = f"{folder}/.{path.rsplit('/', 1)[1]}{IN_PROGRESS_SUFFIX}" if local else path
    with store.fs.open_output_stream(target) as out:
        pq.write_table(table, out, compression="zstd", use_dictionary=[c for c in DICTIONARY_COLUMNS
                                                                       if c in table.column_names])
    if local:
        store.fs.move(target, path)  # rename: the file appears whole or not at all


class _DeadLetters:
    """Produces refused messages, exact bytes and why, to the DLQ topic.

    At least once: a pass killed after producing but before committing
    produces them again. Bronze's rejects table is the exactly-once record.
    """

    def __init__(self, bootstrap: str, topic: str):
        from confluent_kafka import Producer

        self.topic = topic
        self.failed = 0
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all"})

    def send(self, source_topic: str, partition: int, dlq_values: list) -> None:
        for value, verdict, offset, key in dlq_values:
            headers = [(DLQ_HEADER_REASON, verdict.reason.value), (DLQ_HEADER_DETAIL, verdict.detail[:500]),
                       (DLQ_HEADER_SOURCE, f"{source_topic}/{partition}/{offset}")]
            while True:
                try:
                    self._producer.produce(self.topic, value=value, key=key, headers=headers,
                                           on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self.failed += 1
            LOG.error("DLQ delivery failed: %s", err)

    def flush(self) -> None:
        self._producer.flush(30)


class _CommitPartitionFiles(beam.DoFn):
    def __init__(self, lake_root: str, bootstrap: str, source_topic: str, dlq_topic: Optional[str],
                 open_from_ms: Optional[int], watermarks: dict, close_hours: Optional[tuple] = None):
        self._close_hours = close_hours  # (partitions, allowed lateness ms) on streaming runners
        self._root = lake_root
        self._bootstrap = bootstrap
        self._source_topic = source_topic
        self._dlq_topic = dlq_topic
        self._open_from = open_from_ms
        self._watermarks = dict(watermarks)
        self.bronze_rows = Metrics.counter(NAMESPACE, "bronze_rows")
        self.reject_rows = Metrics.counter(NAMESPACE, "reject_rows")
        self.files = Metrics.counter(NAMESPACE, "files")
        self.dlq_failed = Metrics.counter(NAMESPACE, "dlq_failed")
        self.busy_ms = Metrics.counter(NAMESPACE, "commit_ms")

    def setup(self):
        self._store = BronzeStore(self._root)
        self._dlq = _DeadLetters(self._bootstrap, self._dlq_topic) if self._dlq_topic else None
        # Partitions commit in parallel: Parquet encoding and zstd run in Arrow's C++ without the
        # GIL, and at the end of a local pass nothing else is left to run.
        self._threads = ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4),
                                           thread_name_prefix="bronze-commit")

    def teardown(self):
        self._threads.shutdown(wait=True)

    def start_bundle(self):
        self._pending = {}  # partition -> (future, batches, timestamp, window), in arrival order

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        partition, batches = element
        if partition in self._pending:  # a second firing of one partition: its watermark follows the first
            yield from self._finish(partition)
        batches = list(batches)
        future = self._threads.submit(self._commit, partition, batches, self._watermarks.get(partition, -1))
        self._pending[partition] = (future, batches, timestamp, window)

    def finish_bundle(self):
        for partition in list(self._pending):
            yield from self._finish(partition)

    def _commit(self, partition: int, batches: list, watermark_ms: int):
        started = time.perf_counter()
        group = commit_partition(self._store, partition, batches, self._open_from, watermark_ms)
        return group, time.perf_counter() - started  # Beam's metrics are per thread: counted by the caller

    def _finish(self, partition: int):
        future, batches, timestamp, window = self._pending.pop(partition)
        group, seconds = future.result()
        self.busy_ms.inc(int(seconds * 1000))
        if group is None:
            return
        self._watermarks[partition] = group.watermark_ms
        self.bronze_rows.inc(group.bronze_rows)
        self.reject_rows.inc(group.reject_rows)
        self.files.inc(len(group.files))
        if self._dlq is not None and group.reject_rows:
            for b in batches:
                self._dlq.send(self._source_topic, partition, b.dlq_values)
            self._dlq.flush()
            if self._dlq.failed:
                self.dlq_failed.inc(self._dlq.failed)
                self._dlq.failed = 0
        if self._close_hours is not None:
            # One unbounded run: close hours as the watermarks pass them.
            partitions, lateness_ms = self._close_hours
            if self._store.close_hours(partitions, lateness_ms, drained=False):
                self._open_from = self._store.state(partitions).open_from_ms
        yield WindowedValue(group, timestamp, [window])


class WriteBronze(beam.PTransform):
    """``(partition, ValidatedBatch)`` -> ``CommittedGroup`` per partition and firing.

    On the local runner a pass is bounded, so the group fires once, when the
    pass ends. On a streaming runner (``streaming_buffer_seconds`` set) the
    buffer is a trigger: fire every N seconds of processing time or every
    ``streaming_buffer_batches`` batches, whichever comes first.
    """

    def __init__(self, lake_root: str, bootstrap: str, source_topic: str, dlq_topic: Optional[str],
                 open_from_ms: Optional[int], watermarks: dict,
                 streaming_buffer_seconds: Optional[float] = None, streaming_buffer_batches: int = 2000,
                 close_hours: Optional[tuple] = None):
        super().__init__()
        self._args = (lake_root, bootstrap, source_topic, dlq_topic, open_from_ms, watermarks, close_hours)
        self._streaming_seconds = streaming_buffer_seconds
        self._streaming_batches = streaming_buffer_batches

    def expand(self, keyed):
        if self._streaming_seconds is None:
            # A local pass: FnApiRunner runs it to its end, then groups each partition in one pane,
            # whatever the trigger (and refuses the default one: the read is unbounded). With
            # AfterWatermark it grouped through its general trigger driver, element by element:
            # measured, a third of a second at the end of every pass. With Always it passes the
            # values through. (Were this run by a streaming runner, Always would commit each batch
            # as it comes: small files, nothing lost.)
            buffer = beam.WindowInto(window.GlobalWindows(), trigger=trigger.Always(),
                                     accumulation_mode=trigger.AccumulationMode.DISCARDING)
        else:
            fire = trigger.Repeatedly(trigger.AfterAny(trigger.AfterProcessingTime(max(1, int(self._streaming_seconds))),
                                                       trigger.AfterCount(self._streaming_batches)))
            buffer = beam.WindowInto(window.GlobalWindows(), trigger=fire,
                                     accumulation_mode=trigger.AccumulationMode.DISCARDING)
        return (
            keyed
            | "Buffer" >> buffer
            | "GroupByPartition" >> beam.GroupByKey()
            | "Commit" >> beam.ParDo(_CommitPartitionFiles(*self._args)).with_output_types(CommittedGroup)
        )
