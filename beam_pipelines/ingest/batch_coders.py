"""Coders for the ingest's batches that tell Beam their size without encoding them.

Beam samples the size of what every step outputs (the first ten elements of
each bundle, then fewer) by encoding it with the PCollection's coder. The
ingest's elements are few and large: a ``KafkaBatch`` holds 5,000 messages,
so nearly every one is sampled, and pickling one just to measure it cost a
millisecond (measured: half a second of a 1M-event ingest). These coders
count the bytes instead and encode with pickle where a runner does move a
batch between workers. Importing this module registers them; the steps that
output batches declare ``.with_output_types``.
"""

from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam

from beam_pipelines.ingest.batches import KafkaBatch, ValidatedBatch

__all__ = ["KafkaBatchCoder", "ValidatedBatchCoder"]


class _PickledBatchCoder(beam.coders.Coder):
    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class KafkaBatchCoder(_PickledBatchCoder):
    def estimate_size(self, batch: KafkaBatch) -> int:
        # Keys, offsets and timestamps add about 40 bytes a record; the values are the bulk.
        return sum(len(v) for v in batch.values if v) + 40 * len(batch.offsets)

    def to_type_hint(self) -> type:
        return KafkaBatch


class ValidatedBatchCoder(_PickledBatchCoder):
    def estimate_size(self, batch: ValidatedBatch) -> int:
        return len(batch.bronze_ipc) + len(batch.rejects_ipc) + sum(len(d[0] or b"") for d in batch.dlq_values)

    def to_type_hint(self) -> type:
        return ValidatedBatch


beam.coders.registry.register_coder(KafkaBatch, KafkaBatchCoder)
beam.coders.registry.register_coder(ValidatedBatch, ValidatedBatchCoder)
