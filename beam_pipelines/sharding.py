"""``ShardByVehicle``: Arrow tables -> one table per vehicle shard.

Silver pairs and deduplicates per vehicle and Gold orders each vehicle's
rows, so a shard must hold every row of its vehicles; the shard of a
vehicle is a stable hash of its id, the same on every worker and run.
"""
from __future__ import annotations

import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrow_coder import ArrowTableCoder  # noqa: F401 - registers the coder of pa.Table

__all__ = ["ShardByVehicle", "vehicle_shards"]


def vehicle_shards(vehicle_id: pa.Array, shards: int) -> np.ndarray:
    """A stable shard per row (crc32 of the vehicle id), the same on every worker and run."""
    if isinstance(vehicle_id, pa.ChunkedArray):
        vehicle_id = vehicle_id.combine_chunks()
    encoded = pc.dictionary_encode(vehicle_id.fill_null(""))
    per_vehicle = np.array([zlib.crc32(v.encode()) % shards for v in encoded.dictionary.to_pylist()], dtype=np.int64)
    if len(per_vehicle) == 0:
        return np.zeros(len(vehicle_id), dtype=np.int64)
    return per_vehicle[encoded.indices.to_numpy(zero_copy_only=False)]


def _split(table: pa.Table, shards: int, staging):
    shard = vehicle_shards(table["vehicle_id"], shards)
    for s in np.unique(shard):
        part = table.filter(pa.array(shard == s))
        yield int(s), (staging.put(part, f"shard{int(s)}") if staging is not None else part)


def _concat(parts, staging) -> pa.Table:
    return pa.concat_tables([staging.get(p) if staging is not None else p for p in parts])


class ShardByVehicle(beam.PTransform):
    """Tables with a ``vehicle_id`` column -> one table per shard, holding every row of its vehicles.

    With a ``staging.StagingArea`` the parts travel as files and only their
    paths go through the shuffle.
    """

    def __init__(self, shards: int, staging=None):
        super().__init__()
        self.shards, self.staging = shards, staging

    def expand(self, tables):
        return (tables
                | "Split" >> beam.FlatMap(_split, self.shards, self.staging)
                | "Group" >> beam.GroupByKey()
                | "Concat" >> beam.MapTuple(lambda shard, parts: _concat(parts, self.staging))
                .with_output_types(pa.Table))
