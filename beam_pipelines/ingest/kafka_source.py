"""``ReadKafkaPartitions``: a Python-native unbounded Kafka source.

A splittable DoFn: one element per Kafka partition, the offsets as its
restriction, a watermark from the record timestamps. It emits
``KafkaBatch`` elements (thousands of records each) rather than one element
per record: per-element overhead is what makes Beam slow in Python.

On the local runner a pipeline run is one *pass*: each partition reads until
its pass bound (buffer time, buffer bytes, idleness, or a stop request), then
the run ends and the writers commit. On Flink/Dataflow the same transform
runs unbounded, or ``--kafka-source=xlang`` picks Beam's cross-language
``ReadFromKafka`` (which needs Java and jars from the internet).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import MonotonicWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from beam_pipelines.ingest.batch_coders import KafkaBatchCoder  # noqa: F401 - registers the coder of KafkaBatch
from beam_pipelines.ingest.batches import KafkaBatch
from beam_pipelines.ingest.partition_fetcher import close_fetchers, fetcher_for
from beam_pipelines.ingest.pass_control import PassControl, ReaderState, TopicQuiet, ended_by_counter
from lake_schemas.validation import MIN_RECORD_MS, RECORD_AHEAD_MS

__all__ = [
    "KafkaBatch",
    "PartitionStart",
    "PassBounds",
    "ReadKafkaPartitions",
    "ReadKafkaCrossLanguage",
    "close_consumers",
]

LOG = logging.getLogger(__name__)
_END = 2**63 - 1


class PartitionStart(NamedTuple):
    topic: str
    partition: int
    offset: int  # the first offset this pass reads


@dataclass(frozen=True)
class PassBounds:
    """When a partition's reader ends its pass. ``idle_seconds=None`` never
    ends on idleness (streaming runners); ``max_seconds``/``max_bytes`` are
    the buffer: a pass holds at most that much before its files are written."""

    max_seconds: float = 300.0
    max_bytes: int = 64 * 1024 * 1024
    idle_seconds: Optional[float] = None
    poll_batch: int = 5000
    round_seconds: float = 1.0  # read this long, then let the runner schedule other partitions


def close_consumers() -> None:
    """Close the worker's consumers (the end of a local ingest run)."""
    close_fetchers()


class _OffsetProvider(RestrictionProvider):
    def initial_restriction(self, element: PartitionStart) -> OffsetRange:
        return OffsetRange(element.offset, _END)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return 1  # unknown: Tansu's high watermark is unreliable

    def split(self, element: Any, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # a Kafka partition is read by one reader, in order

    def truncate(self, element: Any, restriction: OffsetRange) -> None:
        return None  # on drain, stop reading: nothing is committed that was not read


class _RecordTimeWatermark(WatermarkEstimatorProvider):
    """The watermark follows the record timestamps (monotone), from the start of time."""

    def initial_estimator_state(self, element: Any, restriction: OffsetRange) -> Timestamp:
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, state: Timestamp) -> MonotonicWatermarkEstimator:
        return MonotonicWatermarkEstimator(state)


class _ReadPartition(beam.DoFn):
    def __init__(
        self, bootstrap: str, bounds: PassBounds, control: PassControl, consumer_config: Optional[dict] = None
    ):
        self._bootstrap = bootstrap
        self._bounds = bounds
        self._control = control
        self._config = dict(consumer_config or {})
        self.records = Metrics.counter("lake.ingest", "records")
        self.poll_ms = Metrics.counter("lake.ingest", "poll_ms")
        self.bytes = Metrics.counter("lake.ingest", "bytes")

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: PartitionStart,
        tracker: Any = beam.DoFn.RestrictionParam(_OffsetProvider()),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(_RecordTimeWatermark()),
    ) -> Iterator[Any]:
        bounds = self._bounds
        restriction = tracker.current_restriction()
        now = time.monotonic()
        state, quiet = self._control.reader(element.partition)
        fetcher = fetcher_for(self._bootstrap, element.topic, self._config)
        fetcher.position(element.partition, restriction.start)
        round_end = now + bounds.round_seconds
        empty_poll = False
        while True:
            reason = self._pass_over(state, quiet, idle_check=empty_poll)
            if reason is not None:
                self._control.end(element.partition, reason)
                # The driver's control is another object when this worker is another process: it reads this.
                Metrics.counter("lake.ingest", ended_by_counter(element.partition, reason)).inc()
                tracker.try_claim(restriction.stop)  # marks the restriction done: the pass ends here
                return
            polled = time.perf_counter()
            messages, topic_delivered = fetcher.take(element.partition, bounds.poll_batch, self._wait(quiet))
            self.poll_ms.inc(int((time.perf_counter() - polled) * 1000))
            if topic_delivered:
                quiet.last_record = time.monotonic()
            empty_poll = not messages
            if messages:
                batch, claimed_all = self._claim(element, messages, tracker)
                if batch is not None:
                    state.records += len(batch.offsets)
                    self.records.inc(len(batch.offsets))
                    read = sum(len(v) for v in batch.values if v)
                    state.bytes_read += read
                    self.bytes.inc(read)
                    # Within the contract's range: a hostile timestamp (year 10000, int64 max) must neither
                    # overflow Beam's Timestamp nor push the watermark past the ingest's clock.
                    event_ms = min(max(batch.timestamps), int(time.time() * 1000) + RECORD_AHEAD_MS)
                    yield TimestampedValue(batch, Timestamp(micros=max(event_ms, MIN_RECORD_MS) * 1000))
                if not claimed_all:
                    # The runner split the restriction: records past the split
                    # were fetched but are not ours; seek afresh next time.
                    fetcher.forget_position(element.partition)
                    return
            elif self._pass_over(state, quiet, idle_check=True) is None:
                break  # nothing waiting here: let the runner turn to the other partitions
            if time.monotonic() >= round_end:
                break
        tracker.defer_remainder(Duration.of(0))

    def _wait(self, quiet: TopicQuiet) -> float:
        """How long a poll may block: 50 ms, less once the topic has been quiet nearly the idle bound,
        so the readers that come after the first to see idleness end at once."""
        if self._bounds.idle_seconds is None:
            return 0.05
        return min(0.05, max(0.0, quiet.last_record + self._bounds.idle_seconds - time.monotonic()))

    def _pass_over(self, state: ReaderState, quiet: TopicQuiet, idle_check: bool) -> Optional[str]:
        bounds = self._bounds
        now = time.monotonic()
        if self._control.stop.is_set():
            return "stop"
        if state.bytes_read >= bounds.max_bytes:
            quiet.buffer_full = True
            return "bytes"
        if quiet.buffer_full:
            return "bytes"
        if now - state.started >= bounds.max_seconds:
            return "time"
        if idle_check and bounds.idle_seconds is not None and now - quiet.last_record >= bounds.idle_seconds:
            return "idle"
        return None

    @staticmethod
    def _claim(element: PartitionStart, messages: list, tracker: Any) -> tuple[Optional[KafkaBatch], bool]:
        """The claimed records as a batch, and whether every record was claimed.

        Offsets only grow within a partition, so claiming a batch's last
        offset claims the batch; record by record only when that fails (the
        runner split the restriction inside the batch).
        """
        if not messages:
            return None, True
        claimed_all = tracker.try_claim(messages[-1].offset())
        if not claimed_all:
            stop = tracker.current_restriction().stop
            messages = [m for m in messages if m.offset() < stop]
        now_ms = int(time.time() * 1000)
        offsets = [m.offset() for m in messages]
        stamps = [m.timestamp() for m in messages]
        timestamps = [t for _, t in stamps]
        if min(timestamps, default=0) < 0:  # a record without a timestamp: its arrival time
            timestamps = [now_ms if kind == TIMESTAMP_NOT_AVAILABLE else t for kind, t in stamps]
        batch = KafkaBatch(
            element.topic,
            element.partition,
            offsets,
            timestamps,
            [m.key() for m in messages],
            [m.value() for m in messages],
        )
        return (batch if offsets else None), claimed_all

    def teardown(self) -> None:
        close_consumers()


class ReadKafkaPartitions(beam.PTransform):
    """``PartitionStart`` elements -> ``KafkaBatch`` elements, each partition read in offset order."""

    def __init__(
        self,
        bootstrap: str,
        bounds: PassBounds,
        control: Optional[PassControl] = None,
        consumer_config: Optional[dict] = None,
    ):
        """``control``: shared with the driver of a local pass (a fresh one when not given)."""
        super().__init__()
        self._bootstrap = bootstrap
        self._bounds = bounds
        self._control = control if control is not None else PassControl(uuid.uuid4().hex)
        self._config = consumer_config

    def expand(self, starts: Any) -> Any:
        return starts | "ReadPartition" >> beam.ParDo(
            _ReadPartition(self._bootstrap, self._bounds, self._control, self._config)
        ).with_output_types(KafkaBatch)


class _ToKafkaBatch(beam.DoFn):
    """``(partition, [KafkaRecord...])`` from ``GroupIntoBatches`` -> ``KafkaBatch``."""

    def __init__(self, topic: str):
        self._topic = topic

    def process(self, element: Any) -> Iterator[Any]:
        partition, records = element
        records = sorted(records, key=lambda r: r.offset)
        yield KafkaBatch(
            self._topic,
            partition,
            [r.offset for r in records],
            [r.timestamp for r in records],
            [r.key for r in records],
            [r.value for r in records],
        )


class ReadKafkaCrossLanguage(beam.PTransform):
    """Beam's Java ``ReadFromKafka`` (Flink/Dataflow), batched like the native source.

    It needs Java and the expansion-service jars, which are downloaded when
    the pipeline is built: it cannot run offline. Offsets are committed by
    the Java reader on checkpoint finalization; Bronze's file names still
    carry the ranges, so a restart's overlap is visible and removable.
    """

    def __init__(self, bootstrap: str, topic: str, batch_size: int = 5000, expansion_service: Any = None):
        super().__init__()
        self.consumer_config = {
            "bootstrap.servers": bootstrap,
            "group.id": "lake-ingest",
            "auto.offset.reset": "earliest",
        }
        self.topic = topic
        self.batch_size = batch_size
        self.expansion_service = expansion_service

    def expand(self, pbegin: Any) -> Any:
        from apache_beam.io.kafka import ReadFromKafka

        kwargs = {"expansion_service": self.expansion_service} if self.expansion_service else {}
        return (
            pbegin
            | "ReadFromKafka"
            >> ReadFromKafka(
                consumer_config=self.consumer_config,
                topics=[self.topic],
                with_metadata=True,
                commit_offset_in_finalize=True,
                **kwargs,
            )
            | "KeyByPartition" >> beam.Map(lambda r: (r.partition, r))
            | "Batch" >> beam.GroupIntoBatches(self.batch_size, max_buffering_duration_secs=5)
            | "ToKafkaBatch" >> beam.ParDo(_ToKafkaBatch(self.topic)).with_output_types(KafkaBatch)
        )
