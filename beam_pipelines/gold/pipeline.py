"""The Gold job: one Silver day -> the three Gold tables.

    ReadSilverDay | ShardByVehicle | ComputeGold | CommitGold

The day's files are listed from one Silver version before the pipeline
starts (a Silver job committing meanwhile does not change what this run
reads); no Silver table, a day without rows, or a Gold table of another
schema are refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.batch import pipeline_options, run_pipeline
from beam_pipelines.gold.commit import Gate, check_existing_tables
from beam_pipelines.gold.options import GoldOptions, parse
from beam_pipelines.gold.transforms import NAMESPACE, CommitGold, ComputeGold, ReadSilverDay, ShardByVehicle
from beam_pipelines.reports import report_fields, script_main, writes_json_report
from beam_pipelines.sharding import shard_count
from beam_pipelines.staging import StagingArea
from lake_core.delta import check_schema
from lake_core.errors import LakeDataError
from lake_core.settings import Settings
from lake_schemas import LakePaths
from lake_schemas.tables import SILVER_SCHEMA
from quality.gates import GoldGate
from quality.worker import gate_process

__all__ = ["GoldReport", "build", "silver_day_files", "run_gold", "run"]


@dataclass
class GoldReport:
    """What one Gold run did; every count is a field (a misspelt one is an error, not a 0)."""

    date: str
    silver_version: int
    silver_rows: int = 0
    vehicle_hours: int = 0
    zone_hours: int = 0
    vehicles: int = 0
    state_inserted: int = 0
    state_updated: int = 0
    counters: dict[str, int] = field(default_factory=dict)  # every Beam counter, as the JSON report keeps them

    @classmethod
    def from_counters(cls, date: str, silver_version: int, counters: dict[str, int]) -> GoldReport:
        return cls(date, silver_version, **report_fields(cls, counters), counters=dict(counters))

    def summary(self) -> str:
        return (
            f"gold {self.date}: {self.silver_rows:,} silver rows (version {self.silver_version}) -> "
            f"{self.vehicle_hours:,} vehicle hours, {self.zone_hours:,} zone hours, "
            f"{self.vehicles:,} vehicles in the state ({self.state_inserted:,} new)"
        )


def silver_day_rows(lake_root: str, day: _dt.date) -> int:
    """Rows of Silver's partition ``day``, from the Delta log's statistics (no data file is read)."""
    from deltalake import DeltaTable

    actions = pa.table(DeltaTable(LakePaths(lake_root).table("silver_telemetry")).get_add_actions(flatten=True))
    if actions.num_rows == 0 or "partition.event_date" not in actions.column_names:
        return 0
    of_day = actions.filter(pc.equal(actions["partition.event_date"], pa.scalar(day, pa.date32())))
    return int(pc.sum(of_day["num_records"]).as_py() or 0)


def silver_day_files(lake_root: str, day: _dt.date) -> tuple[int, list]:
    """``(version, data file URIs)`` of Silver's partition ``day``; ``LakeDataError`` when it has none."""
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table("silver_telemetry")
    if not DeltaTable.is_deltatable(path):
        raise LakeDataError(f"no Silver table at {path}: run `lake silver --hour ...` first")
    table = DeltaTable(path)
    check_schema(table, SILVER_SCHEMA, "silver_telemetry")
    files = table.file_uris(file_pruning_predicate=[("event_date", "=", day.isoformat())])
    if not files:
        raise LakeDataError(f"Silver has no rows for {day.isoformat()} (event_date, UTC) in {path}")
    return table.version(), sorted(files)


def build(
    pipeline: beam.Pipeline,
    opts: GoldOptions,
    files: list,
    gate: Optional[Gate] = None,
    staging: Optional[StagingArea] = None,
) -> None:
    """Wire the pipeline: the architecture picture, in code."""
    (
        pipeline
        | "ReadSilverDay" >> ReadSilverDay(opts.lake_root, opts.day, files)
        | "ShardByVehicle" >> ShardByVehicle(opts.shards, staging)
        | "ComputeGold" >> ComputeGold(opts.day)
        | "CommitGold" >> CommitGold(opts.lake_root, opts.day, gate)
    )


def _gate(opts: GoldOptions) -> Optional[GoldGate]:
    if not opts.gate:
        return None

    return GoldGate(opts.lake_root)


@writes_json_report("gold")
def run_gold(opts: GoldOptions, beam_args: Sequence[str] = ()) -> GoldReport:
    """Aggregate one Silver day; raise a ``LakeError`` (tables untouched) when it cannot."""
    # The gate's imports run in a second process meanwhile (see quality.worker).
    with gate_process(opts.gate and opts.local):
        version, files = silver_day_files(opts.lake_root, opts.day)
        opts = dataclasses.replace(opts, shards=shard_count(silver_day_rows(opts.lake_root, opts.day), opts.shards))
        check_existing_tables(opts.lake_root)
        staging = StagingArea(opts.lake_root, "gold")
        pipeline = beam.Pipeline(options=pipeline_options(opts.runner, opts.local, beam_args))
        build(pipeline, opts, files, _gate(opts), staging)
        try:
            counters = run_pipeline(pipeline, NAMESPACE)
        finally:
            staging.remove()
    return GoldReport.from_counters(opts.date, version, counters)


def run(argv: Optional[Sequence[str]] = None) -> GoldReport:
    """Entry point for ``python -m beam_pipelines.gold.pipeline --date ...`` and the DAGs."""
    opts, beam_args = parse(argv, Settings.resolve(bootstrap="unused"))
    return run_gold(opts, beam_args)


if __name__ == "__main__":
    sys.exit(script_main(run, sys.argv[1:]))
