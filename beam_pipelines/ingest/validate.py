"""``ValidateTelemetry``: a ``KafkaBatch`` -> Arrow tables for Bronze and rejects.

Each message is checked by the contract's own validator
(``lake_schemas.validate_message``); the columns are then built once per
batch (``batches.validate_batch``), so the per-message cost is the
validation and nothing else. On the local runner the batches are validated
in helper processes (``validation_processes``) while the reader goes on; a
bundle still ends only when all of its batches are validated and emitted.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future
from typing import Any, Iterator, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipelines.ingest import validation_processes
from beam_pipelines.ingest.batch_coders import ValidatedBatchCoder  # noqa: F401 - registers the coder of ValidatedBatch
from beam_pipelines.ingest.batches import KafkaBatch, ValidatedBatch, validate_batch

__all__ = ["ValidatedBatch", "ValidateTelemetry", "validate_batch"]


class _Validate(beam.DoFn):
    def __init__(self) -> None:
        # Time the runner's own process spent validating, or waiting for a helper process to.
        self.busy_ms = Metrics.counter("lake.ingest", "validate_ms")

    def start_bundle(self) -> None:
        # (future, batch, timestamp, window), in submission order
        self._pending: collections.deque[tuple[Future, KafkaBatch, Any, Any]] = collections.deque()

    def process(
        self, batch: KafkaBatch, timestamp: Any = beam.DoFn.TimestampParam, window: Any = beam.DoFn.WindowParam
    ) -> Iterator[Any]:
        future = validation_processes.submit(batch)
        if future is None:
            started = time.perf_counter()
            validated = validate_batch(batch)
            self.busy_ms.inc(int((time.perf_counter() - started) * 1000))
            yield batch.partition, validated
            return
        self._pending.append((future, batch, timestamp, window))
        # Emit what is done; wait only when too much is in flight (memory stays bounded).
        while self._pending and (
            self._pending[0][0].done() or len(self._pending) > validation_processes.in_flight_limit()
        ):
            yield self._collect()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        while self._pending:  # nothing may outlive its bundle: the runner commits the bundle after this
            yield self._collect()

    def _collect(self) -> WindowedValue:
        future, batch, timestamp, window = self._pending.popleft()
        started = time.perf_counter()
        validated = validation_processes.result(future, batch)
        self.busy_ms.inc(int((time.perf_counter() - started) * 1000))
        # Beam annotates windows as a tuple but passes a list itself (core.py, util.py): kept as it was.
        return WindowedValue((batch.partition, validated), timestamp, [window])  # type: ignore[arg-type]


class ValidateTelemetry(beam.PTransform):
    """``KafkaBatch`` -> ``(partition, ValidatedBatch)``, keyed for the per-partition writer."""

    def expand(self, batches: Any) -> Any:
        return batches | "Validate" >> beam.ParDo(_Validate()).with_output_types(Tuple[int, ValidatedBatch])
