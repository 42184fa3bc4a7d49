"""``ValidateTelemetry``: a ``KafkaBatch`` -> Arrow tables for Bronze and rejects.

Each message is checked by the contract's own validator
(``lake_schemas.validate_message``); the columns are then built once per
batch, so the per-message cost is the validation and nothing else.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa

from lake_schemas import BRONZE_SCHEMA, REJECTS_SCHEMA, Accepted, validate_message

from .kafka_source import KafkaBatch

__all__ = ["ValidatedBatch", "ValidateTelemetry", "validate_batch"]


class ValidatedBatch(NamedTuple):
    partition: int
    first_offset: int
    last_offset: int
    bronze: pa.Table
    rejects: pa.Table
    dlq_values: list  # the refused messages' exact bytes, for the DLQ topic


def _text(values: list, indices: list, null_as_empty: bool = False) -> pa.Array:
    """bytes -> a string column; bytes that are not UTF-8 keep backslash escapes."""
    picked = [values[i] for i in indices]
    if null_as_empty:  # a tombstone (null value) is kept as an empty payload
        picked = [b"" if v is None else v for v in picked]
    try:
        return pa.array(picked, pa.binary()).cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else v.decode("utf-8", "backslashreplace") for v in picked], pa.string())


def _columns(batch: KafkaBatch, indices: list) -> list:
    n = len(indices)
    return [
        pa.array([batch.topic] * n, pa.string()),
        pa.array([batch.partition] * n, pa.int32()),
        pa.array([batch.offsets[i] for i in indices], pa.int64()),
        pa.array([batch.timestamps[i] for i in indices], pa.int64()).cast(BRONZE_SCHEMA.field("ingest_ts").type),
        _text(batch.keys, indices),
        _text(batch.values, indices, null_as_empty=True),
    ]


def validate_batch(batch: KafkaBatch) -> ValidatedBatch:
    verdicts = [validate_message(v) for v in batch.values]
    good = [i for i, v in enumerate(verdicts) if type(v) is Accepted]
    if len(good) == len(verdicts):
        bad = []
        good = list(range(len(verdicts)))
    else:
        bad = [i for i, v in enumerate(verdicts) if type(v) is not Accepted]
    ts_type = BRONZE_SCHEMA.field("event_ts").type
    bronze = pa.Table.from_arrays(
        _columns(batch, good)
        + [
            pa.array([verdicts[i].vehicle_id for i in good], pa.string()),
            pa.array([verdicts[i].event_ts_ms for i in good], pa.int64()).cast(ts_type),
        ],
        schema=BRONZE_SCHEMA,
    )
    rejects = pa.Table.from_arrays(
        _columns(batch, bad)
        + [
            pa.array([verdicts[i].vehicle_id for i in bad], pa.string()),
            pa.array([verdicts[i].event_ts_ms for i in bad], pa.int64()).cast(ts_type),
            pa.array([verdicts[i].reason.value for i in bad], pa.string()),
            pa.array([verdicts[i].detail for i in bad], pa.string()),
        ],
        schema=REJECTS_SCHEMA,
    )
    return ValidatedBatch(
        batch.partition, batch.offsets[0], batch.offsets[-1], bronze, rejects,
        [(batch.values[i], verdicts[i], batch.offsets[i], batch.keys[i]) for i in bad],
    )


class ValidateTelemetry(beam.PTransform):
    """``KafkaBatch`` -> ``(partition, ValidatedBatch)``, keyed for the per-partition writer."""

    def expand(self, batches):
        return batches | "Validate" >> beam.Map(lambda b: (b.partition, validate_batch(b)))
