"""The Gold job's composite transforms, in pipeline order.

    ReadSilverDay | ShardByVehicle | ComputeGold | CommitGold

Elements are Arrow tables (a Silver file, then a vehicle shard); the work is
in ``compute`` and ``commit``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Iterator, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from beam_pipelines.arrow_coder import ArrowTableCoder  # noqa: F401 - registers the coder of pa.Table
from beam_pipelines.gold.commit import Gate, commit_day
from beam_pipelines.gold.compute import combine_parts, compute_gold
from beam_pipelines.sharding import ShardByVehicle
from lake_core.errors import LakeDataError
from lake_core.storage import filesystem, fs_path
from lake_schemas.tables import LINEAGE_FIELDS, SILVER_SCHEMA

__all__ = ["NAMESPACE", "ReadSilverDay", "ShardByVehicle", "ComputeGold", "CommitGold", "read_silver_file"]

NAMESPACE = "lake.gold"
_NOT_READ = {"event_date", *(f.name for f in LINEAGE_FIELDS)}


def read_silver_file(lake_root: str, uri: str, day: _dt.date) -> pa.Table:
    """One data file of Silver's ``event_date=day`` partition as ``SILVER_SCHEMA`` rows."""
    fs, _ = filesystem(lake_root)
    try:
        with fs.open_input_file(fs_path(lake_root, uri)) as f:
            table = pq.read_table(f, columns=[n for n in SILVER_SCHEMA.names if n not in _NOT_READ])
    except (OSError, pa.ArrowException) as exc:
        raise LakeDataError(f"Silver file {uri} is unreadable: {str(exc).strip().splitlines()[0]}") from None
    table = table.append_column("event_date", pa.repeat(pa.scalar(day, pa.date32()), table.num_rows))
    for f in LINEAGE_FIELDS:  # Gold needs no lineage (``lake lineage`` reads Silver): nulls cost nothing to shuffle
        table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(SILVER_SCHEMA.names).cast(SILVER_SCHEMA)


class _ReadSilverFile(beam.DoFn):
    def __init__(self, lake_root: str, day: _dt.date):
        self.lake_root, self.day = lake_root, day

    def process(self, uri: str) -> Iterable[pa.Table]:
        table = read_silver_file(self.lake_root, uri, self.day)
        Metrics.counter(NAMESPACE, "silver_rows").inc(table.num_rows)
        yield table


class ReadSilverDay(beam.PTransform):
    """The data files of one Silver day (listed from one table version) -> Arrow tables."""

    def __init__(self, lake_root: str, day: _dt.date, files: Iterable[str]):
        super().__init__()
        self.lake_root, self.day, self.files = lake_root, day, list(files)

    def expand(self, pbegin: Any) -> Any:
        return (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "Read" >> beam.ParDo(_ReadSilverFile(self.lake_root, self.day)).with_output_types(pa.Table)
        )


class ComputeGold(beam.PTransform):
    """A vehicle shard of the day -> ``compute.GoldParts``."""

    def __init__(self, day: _dt.date):
        super().__init__()
        self.day = day

    def expand(self, shards: Any) -> Any:
        return shards | "Compute" >> beam.Map(compute_gold, self.day)


class _Commit(beam.DoFn):
    def __init__(self, lake_root: str, day: _dt.date, gate: Optional[Gate]):
        self.lake_root, self.day, self.gate = lake_root, day, gate

    def process(self, parts: list) -> Iterator[Any]:
        result = commit_day(self.lake_root, self.day, combine_parts(parts), gate=self.gate)
        for name in ("vehicle_hours", "zone_hours", "vehicles", "state_inserted", "state_updated"):
            Metrics.counter(NAMESPACE, name).inc(getattr(result, name))
        yield result


class CommitGold(beam.PTransform):
    """Every shard's ``GoldParts`` -> one gated commit of the day."""

    def __init__(self, lake_root: str, day: _dt.date, gate: Optional[Gate] = None):
        super().__init__()
        self.lake_root, self.day, self.gate = lake_root, day, gate

    def expand(self, parts: Any) -> Any:
        return (
            parts
            | "Gather" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(_Commit(self.lake_root, self.day, self.gate))
        )
