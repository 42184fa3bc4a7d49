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
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Iterable, Iterator, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipelines.ingest.bronze_state import WATERMARK_KEY, BronzeStore
from beam_pipelines.ingest.validate import ValidatedBatch
from lake_core.bronze.layout import DICTIONARY_COLUMNS
from lake_core.errors import LakeError
from lake_core.storage import is_local, write_whole
from lake_schemas import BronzeFileName, RejectReason
from lake_schemas.paths import hour_of_ms
from lake_schemas.topics import DLQ_HEADER_DETAIL, DLQ_HEADER_REASON, DLQ_HEADER_SOURCE

__all__ = ["WriteBronze", "CommittedGroup", "commit_partition"]

LOG = logging.getLogger(__name__)
NAMESPACE = "lake.ingest"
#: Beam counters ``rejects.<reason>``: the pass's rejects by reason code (its metrics, lake.observability).
REJECT_COUNTER_PREFIX = "rejects."


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


def commit_partition(
    store: BronzeStore,
    partition: int,
    batches: Iterable[ValidatedBatch],
    open_from_ms: Optional[int],
    previous_watermark_ms: int = -1,
    generation: int = 0,
) -> Optional[CommittedGroup]:
    """Write one partition's group of files (named for Bronze's current ``generation``); return what was committed."""
    batches = sorted(batches, key=lambda b: b.first_offset)
    if not batches:
        return None
    first, last = batches[0].first_offset, max(b.last_offset for b in batches)
    bronze = pa.concat_tables([b.bronze for b in batches])
    rejects = pa.concat_tables([b.rejects for b in batches])
    rejects = _place_out_of_range(rejects, _earliest_open_hour(bronze, rejects, open_from_ms, previous_watermark_ms))
    watermark = max(previous_watermark_ms, _max_ms(bronze), _max_ms(rejects))
    parts = [("bronze_telemetry", h, t) for h, t in _split_by_hour(bronze, open_from_ms)]
    parts += [("bronze_rejects", h, t) for h, t in _split_by_hour(rejects, open_from_ms)]
    files = []
    for index, (table_name, hour_ms, table) in enumerate(parts, start=1):
        name = str(BronzeFileName(partition, first, last, index, len(parts), generation))
        folder = store.hour_dir(table_name, hour_ms)
        path = f"{folder}/{name}"
        _write_parquet(
            store,
            folder,
            path,
            table.replace_schema_metadata({**(table.schema.metadata or {}), WATERMARK_KEY: str(watermark).encode()}),
        )
        files.append(path)
    return CommittedGroup(partition, first, last, files, bronze.num_rows, rejects.num_rows, watermark)


def _out_of_range(rejects: pa.Table) -> pa.Array:
    return pc.equal(rejects["reason"], RejectReason.RECORD_TIMESTAMP_OUT_OF_RANGE.value)


def _earliest_open_hour(
    bronze: pa.Table, rejects: pa.Table, open_from_ms: Optional[int], previous_watermark_ms: int
) -> int:
    """Where records with an out-of-range timestamp go: the earliest open hour (contract section 2).

    Before any hour is complete: the earliest hour this group writes otherwise, else the hour of the
    partition's watermark, else the current hour. Never a later hour than the data's: such a record
    must not open (nor, through the watermark, close) an hour of its own.
    """
    if open_from_ms is not None:
        return open_from_ms
    stamps = [bronze["ingest_ts"], rejects.filter(pc.invert(_out_of_range(rejects)))["ingest_ts"]]
    lows = [pc.min(s).cast(pa.int64()).as_py() for s in stamps if len(s)]
    if lows:
        return hour_of_ms(min(lows))
    if previous_watermark_ms >= 0:
        return hour_of_ms(previous_watermark_ms)
    return hour_of_ms(int(time.time() * 1000))


def _place_out_of_range(rejects: pa.Table, hour_ms: int) -> pa.Table:
    """Stamp the out-of-range rejects with ``hour_ms`` (their own timestamp is in ``reason_detail``)."""
    if rejects.num_rows == 0:
        return rejects
    mask = _out_of_range(rejects)
    if not pc.any(mask).as_py():
        return rejects
    column = rejects.schema.get_field_index("ingest_ts")
    stamp = pa.scalar(hour_ms, pa.int64()).cast(rejects.schema.field(column).type)
    return rejects.set_column(column, rejects.schema.field(column), pc.if_else(mask, stamp, rejects["ingest_ts"]))


def _max_ms(table: pa.Table) -> int:
    if table.num_rows == 0:
        return -1
    return int(pc.max(table["ingest_ts"]).cast(pa.int64()).as_py())


def _write_parquet(store: BronzeStore, folder: str, path: str, table: pa.Table) -> None:
    store.fs.create_dir(folder, recursive=True)
    dictionary = [c for c in DICTIONARY_COLUMNS if c in table.column_names]
    write_whole(
        store.fs,
        path,
        lambda out: pq.write_table(table, out, compression="zstd", use_dictionary=dictionary),
        local=is_local(store.paths.root),
    )


class DeadLetterUndelivered(LakeError):
    """The DLQ did not acknowledge every reject of a pass: the pass fails before its commit."""

    exit_code = 3


class _DeadLetters:
    """Produces refused messages, exact bytes and why, to the DLQ topic, before the commit that holds them.

    ``deliver`` returns only once the broker acknowledged every message, and
    raises ``DeadLetterUndelivered`` otherwise: the pass fails before its
    commit and is run again, so a kill or a slow broker can duplicate a DLQ
    message but never lose one. Bronze's rejects table is the exactly-once
    record.
    """

    def __init__(self, bootstrap: str, topic: str):
        from confluent_kafka import Producer

        self.topic = topic
        self.failed = 0
        self._lock = threading.Lock()
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all"})

    def send(self, source_topic: str, partition: int, dlq_values: list) -> None:
        for value, verdict, offset, key in dlq_values:
            headers = [
                (DLQ_HEADER_REASON, verdict.reason.value),
                (DLQ_HEADER_DETAIL, verdict.detail[:500]),
                (DLQ_HEADER_SOURCE, f"{source_topic}/{partition}/{offset}"),
            ]
            while True:
                try:
                    self._producer.produce(
                        self.topic, value=value, key=key, headers=headers, on_delivery=self._delivered
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            LOG.error("DLQ delivery failed: %s", err)

    def deliver(self, source_topic: str, partition: int, dlq_values: list, timeout_s: float = 30.0) -> None:
        with self._lock:  # partitions commit in threads; one delivery (and its failure count) at a time
            self.failed = 0
            self.send(source_topic, partition, dlq_values)
            waiting = self._producer.flush(timeout_s)
            failed = self.failed
        if waiting or failed:
            raise DeadLetterUndelivered(
                f"DLQ topic {self.topic}: {failed} refused and {waiting} unconfirmed of {len(dlq_values)} "
                f"reject(s) of partition {partition}; the pass is not committed and runs again"
            )


class _CommitPartitionFiles(beam.DoFn):
    def __init__(
        self,
        lake_root: str,
        bootstrap: str,
        source_topic: str,
        dlq_topic: Optional[str],
        open_from_ms: Optional[int],
        watermarks: dict,
        close_hours: Optional[tuple] = None,
    ):
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
        self.busy_ms = Metrics.counter(NAMESPACE, "commit_ms")
        self.dlq_produced = Metrics.counter(NAMESPACE, "dlq_produced")

    def setup(self) -> None:
        self._store = BronzeStore(self._root)
        self._generation = self._store.generation()  # fixed for a run: --new-generation starts a new run
        self._dlq = _DeadLetters(self._bootstrap, self._dlq_topic) if self._dlq_topic else None
        # Partitions commit in parallel: Parquet encoding and zstd run in Arrow's C++ without the
        # GIL, and at the end of a local pass nothing else is left to run.
        self._threads = ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4), thread_name_prefix="bronze-commit")

    def teardown(self) -> None:
        self._threads.shutdown(wait=True)

    def start_bundle(self) -> None:
        # partition -> (future, batches, timestamp, window), in arrival order
        self._pending: dict[int, tuple[Future, list, Any, Any]] = {}

    def process(
        self, element: Any, timestamp: Any = beam.DoFn.TimestampParam, window: Any = beam.DoFn.WindowParam
    ) -> Iterator[Any]:
        partition, batches = element
        if partition in self._pending:  # a second firing of one partition: its watermark follows the first
            yield from self._finish(partition)
        batches = list(batches)
        future = self._threads.submit(self._commit, partition, batches, self._watermarks.get(partition, -1))
        self._pending[partition] = (future, batches, timestamp, window)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for partition in list(self._pending):
            yield from self._finish(partition)

    def _commit(self, partition: int, batches: list, watermark_ms: int) -> tuple[Optional[CommittedGroup], float]:
        started = time.perf_counter()
        dlq_values = [v for b in batches for v in b.dlq_values]
        if self._dlq is not None and dlq_values:  # before the commit: see _DeadLetters
            self._dlq.deliver(self._source_topic, partition, dlq_values)
        group = commit_partition(self._store, partition, batches, self._open_from, watermark_ms, self._generation)
        return group, time.perf_counter() - started  # Beam's metrics are per thread: counted by the caller

    def _finish(self, partition: int) -> Iterator[WindowedValue]:
        future, batches, timestamp, window = self._pending.pop(partition)
        try:
            group, seconds = future.result()
        except BaseException:
            # The other partitions' commits run on: let them end (each group whole or absent) before
            # the pass fails, or the next pass would find groups still being written.
            wait([f for f, *_ in self._pending.values()])
            self._pending.clear()
            raise
        self.busy_ms.inc(int(seconds * 1000))
        if group is None:
            return
        self._watermarks[partition] = group.watermark_ms
        self.bronze_rows.inc(group.bronze_rows)
        self.reject_rows.inc(group.reject_rows)
        self.files.inc(len(group.files))
        reasons = Counter(verdict.reason.value for b in batches for _, verdict, _, _ in b.dlq_values)
        for reason, count in reasons.items():  # lake_ingest_rejects_total{reason}, dlq_produced_total
            Metrics.counter(NAMESPACE, f"{REJECT_COUNTER_PREFIX}{reason}").inc(count)
        if self._dlq is not None:
            self.dlq_produced.inc(sum(reasons.values()))
        # Beam annotates windows as a tuple but passes a list itself (core.py, util.py): kept as it was.
        yield WindowedValue(group, timestamp, [window])  # type: ignore[arg-type]


#: Declared so the runner processes ``_CommitAndCloseHours`` serially (state is per key, and there is one key).
_SERIAL = ReadModifyWriteStateSpec("serial", VarIntCoder())


class _CommitAndCloseHours(_CommitPartitionFiles):
    """Streaming runners: each firing's commits of every partition, then the hours they close, as one step.

    Closing hours was a side effect of each partition's commit: one partition
    closed an hour while another's commit, begun with the old bound of open
    hours, still wrote into it; with several workers each had its own bound.
    Here every partition's group of a firing arrives under one key, so one
    instance at a time (a stateful DoFn: the runner serializes a key) commits
    them all (in parallel threads), waits for every one, and only then closes
    the hours the watermarks passed and moves the bound. No commit can run
    with a bound older than the last close.
    """

    def process(
        self,
        element: Any,
        timestamp: Any = beam.DoFn.TimestampParam,
        window: Any = beam.DoFn.WindowParam,
        serial: Any = beam.DoFn.StateParam(_SERIAL),
    ) -> Iterator[Any]:
        _, firing = element
        for partition_batches in firing:
            yield from super().process(partition_batches, timestamp, window)
        for partition in list(self._pending):
            yield from self._finish(partition)
        self.close_hours()

    def close_hours(self) -> list:
        """Close the hours every partition's watermark passed (plus lateness); return their starts."""
        assert self._close_hours is not None
        partitions, lateness_ms = self._close_hours
        closed = self._store.close_hours(partitions, lateness_ms, drained=False)
        if closed:
            self._open_from = self._store.state(partitions).open_from_ms
        return closed


class WriteBronze(beam.PTransform):
    """``(partition, ValidatedBatch)`` -> ``CommittedGroup`` per partition and firing.

    On the local runner a pass is bounded, so the group fires once, when the
    pass ends. On a streaming runner (``streaming_buffer_seconds`` set) the
    buffer is a trigger: fire every N seconds of processing time or every
    ``streaming_buffer_batches`` batches, whichever comes first.
    """

    def __init__(
        self,
        lake_root: str,
        bootstrap: str,
        source_topic: str,
        dlq_topic: Optional[str],
        open_from_ms: Optional[int],
        watermarks: dict,
        streaming_buffer_seconds: Optional[float] = None,
        streaming_buffer_batches: int = 2000,
        close_hours: Optional[tuple] = None,
    ):
        super().__init__()
        self._args = (lake_root, bootstrap, source_topic, dlq_topic, open_from_ms, watermarks, close_hours)
        self._streaming_seconds = streaming_buffer_seconds
        self._streaming_batches = streaming_buffer_batches

    def expand(self, keyed: Any) -> Any:
        if self._streaming_seconds is None:
            # A local pass: FnApiRunner runs it to its end, then groups each partition in one pane,
            # whatever the trigger (and refuses the default one: the read is unbounded). With
            # AfterWatermark it grouped through its general trigger driver, element by element:
            # measured, a third of a second at the end of every pass. With Always it passes the
            # values through. (Were this run by a streaming runner, Always would commit each batch
            # as it comes: small files, nothing lost.)
            buffer = beam.WindowInto(
                window.GlobalWindows(), trigger=trigger.Always(), accumulation_mode=trigger.AccumulationMode.DISCARDING
            )
        else:
            fire = trigger.Repeatedly(
                trigger.AfterAny(
                    trigger.AfterProcessingTime(max(1, int(self._streaming_seconds))),
                    trigger.AfterCount(self._streaming_batches),
                )
            )
            buffer = beam.WindowInto(
                window.GlobalWindows(), trigger=fire, accumulation_mode=trigger.AccumulationMode.DISCARDING
            )
        grouped = keyed | "Buffer" >> buffer | "GroupByPartition" >> beam.GroupByKey()
        if self._streaming_seconds is None:  # a local pass: the driver closes hours after it (pipeline.py)
            return grouped | "Commit" >> beam.ParDo(_CommitPartitionFiles(*self._args)).with_output_types(
                CommittedGroup
            )
        return (
            grouped
            | "OneKey" >> beam.Map(lambda partition_batches: (0, partition_batches))
            | "GroupFiring" >> beam.GroupByKey()
            | "CommitAndCloseHours" >> beam.ParDo(_CommitAndCloseHours(*self._args)).with_output_types(CommittedGroup)
        )
