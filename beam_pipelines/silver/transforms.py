"""The Silver job's composite transforms, in pipeline order.

    ReadBronzeHour | ParseTelemetry | ShardByVehicle | CleanTelemetry | CommitSilver

Elements are Arrow tables (a Bronze file, then a vehicle shard), never one
Python object per event. The work is in ``parse``, ``clean`` and ``commit``;
these classes only place it in the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_pipelines.arrow_coder import ArrowTableCoder  # noqa: F401 - registers the coder of pa.Table
from beam_pipelines.sharding import ShardByVehicle
from beam_pipelines.silver.clean import CleanBatch, clean_batch, merge_batches
from beam_pipelines.silver.commit import Gate, commit_hour
from beam_pipelines.silver.hour_rows import HourRows
from beam_pipelines.silver.parse import parse_bronze
from lake_core.bronze.hour_files import read_bronze_file
from lake_core.registry import read_registry

if TYPE_CHECKING:
    from beam_pipelines.staging import StagingArea

__all__ = ["NAMESPACE", "ReadBronzeHour", "ParseTelemetry", "ShardByVehicle", "CleanTelemetry", "CommitSilver"]

NAMESPACE = "lake.silver"


class _ReadBronzeFile(beam.DoFn):
    def __init__(self, lake_root: str, directory: str):
        self.lake_root = lake_root
        self.directory = directory

    def process(self, name: str) -> Iterable[tuple]:
        table = read_bronze_file(self.lake_root, f"{self.directory}/{name}")
        Metrics.counter(NAMESPACE, "bronze_files").inc()
        yield name, table


class ReadBronzeHour(beam.PTransform):
    """The files of one Bronze hour -> ``(file name, Arrow table)``, one element per file."""

    def __init__(self, lake_root: str, directory: str, files: Iterable[str]):
        super().__init__()
        self.lake_root, self.directory, self.files = lake_root, directory, list(files)

    def expand(self, pbegin: Any) -> Any:
        return (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "Read"
            >> beam.ParDo(_ReadBronzeFile(self.lake_root, self.directory)).with_output_types(Tuple[str, pa.Table])
        )


class ParseTelemetry(beam.PTransform):
    """``(file name, Bronze table)`` -> parsed table (``parse.PARSED_SCHEMA``)."""

    def expand(self, files: Any) -> Any:
        return files | "Parse" >> beam.MapTuple(lambda name, table: parse_bronze(table, name)).with_output_types(
            pa.Table
        )


class _Clean(beam.DoFn):
    def __init__(self, lake_root: str, bronze_hour: str, staging: Optional[StagingArea]):
        self.lake_root, self.bronze_hour, self.staging = lake_root, bronze_hour, staging
        self.registry: Optional[pa.Table] = None

    def setup(self) -> None:
        self.registry = read_registry(self.lake_root).select(["vehicle_id", "vehicle_type"])

    def process(self, parsed: pa.Table) -> Iterator[Any]:
        batch = clean_batch(parsed, self.registry, self.bronze_hour)
        if self.staging is not None:
            batch = batch._replace(
                silver=HourRows([(self.staging.put(batch.silver, "silver"), batch.silver.num_rows)], self.staging),
                quarantine=self.staging.put(batch.quarantine, "quarantine"),
            )
        yield batch


class CleanTelemetry(beam.PTransform):
    """A vehicle shard -> ``clean.CleanBatch``: positions paired, rules applied, enriched, deduplicated.

    With a ``staging.StagingArea`` the batch's tables are staged files.
    """

    def __init__(self, lake_root: str, bronze_hour: str, staging: Optional[StagingArea] = None):
        super().__init__()
        self.lake_root, self.bronze_hour, self.staging = lake_root, bronze_hour, staging

    def expand(self, shards: Any) -> Any:
        return shards | "Clean" >> beam.ParDo(_Clean(self.lake_root, self.bronze_hour, self.staging))


def _unstaged(batch: CleanBatch, staging: Optional[StagingArea]) -> CleanBatch:
    """The batch with its quarantine read back; its Silver rows stay staged (``HourRows``)."""
    if staging is None:
        return batch
    return batch._replace(quarantine=staging.get(batch.quarantine))


class _Commit(beam.DoFn):
    def __init__(
        self,
        lake_root: str,
        bronze_hour: str,
        gate: Optional[Gate],
        staging: Optional[StagingArea],
        publish: bool,
    ):
        self.lake_root, self.bronze_hour, self.gate, self.staging = lake_root, bronze_hour, gate, staging
        self.publish = publish

    def process(self, batches: list) -> Iterator[Any]:
        batch = merge_batches(_unstaged(b, self.staging) for b in batches)
        result = commit_hour(self.lake_root, batch, self.bronze_hour, gate=self.gate, publish=self.publish)
        for name, value in result.stats.items():
            Metrics.counter(NAMESPACE, name).inc(int(value))
        Metrics.counter(NAMESPACE, "quarantine_rows").inc(result.quarantined)
        Metrics.counter(NAMESPACE, "quarantine_commits").inc(int(result.quarantine_written))
        yield result


class CommitSilver(beam.PTransform):
    """Every shard's ``CleanBatch`` -> one gated commit of the hour (Silver MERGE, quarantine).

    ``publish=False`` stops after the gate (a dry run).
    """

    def __init__(
        self,
        lake_root: str,
        bronze_hour: str,
        gate: Optional[Gate] = None,
        staging: Optional[StagingArea] = None,
        publish: bool = True,
    ):
        super().__init__()
        self.lake_root, self.bronze_hour, self.gate, self.staging = lake_root, bronze_hour, gate, staging
        self.publish = publish

    def expand(self, batches: Any) -> Any:
        return (
            batches
            | "Gather" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(_Commit(self.lake_root, self.bronze_hour, self.gate, self.staging, self.publish))
        )
