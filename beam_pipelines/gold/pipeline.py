"""The Gold job: one Silver day -> the three Gold tables.

    ReadSilverDay | ShardByVehicle | ComputeGold | CommitGold

The day's files are listed from one Silver version before the pipeline
starts (a Silver job committing meanwhile does not change what this run
reads); no Silver table, a day without rows, or a Gold table of another
schema are refused before anything is written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import apache_beam as beam

from ..batch import pipeline_options, run_pipeline
from ..reports import script_main, writes_json_report
from ..staging import StagingArea
from .options import GoldOptions
from .transforms import NAMESPACE, CommitGold, ComputeGold, ReadSilverDay, ShardByVehicle

__all__ = ["GoldReport", "build", "silver_day_files", "run_gold", "run"]


@dataclass
class GoldReport:
    date: str
    silver_version: int
    counters: dict = field(default_factory=dict)

    def __getattr__(self, name: str) -> int:  # report.silver_rows, report.vehicle_hours...
        if name.startswith("__"):
            raise AttributeError(name)
        return int(self.counters.get(name, 0))

    def summary(self) -> str:
        return (f"gold {self.date}: {self.silver_rows:,} silver rows (version {self.silver_version}) -> "
                f"{self.vehicle_hours:,} vehicle hours, {self.zone_hours:,} zone hours, "
                f"{self.vehicles:,} vehicles in the state ({self.state_inserted:,} new)")


def silver_day_files(lake_root: str, day) -> tuple[int, list]:
    """``(version, data file URIs)`` of Silver's partition ``day``; ``LakeDataError`` when it has none."""
    from deltalake import DeltaTable

    from lake.errors import LakeDataError
    from lake_schemas import LakePaths
    from lake_schemas.tables import SILVER_SCHEMA

    from ..delta_tables import check_schema

    path = LakePaths(lake_root).table("silver_telemetry")
    if not DeltaTable.is_deltatable(path):
        raise LakeDataError(f"no Silver table at {path}: run `lake silver --hour ...` first")
    table = DeltaTable(path)
    check_schema(table, SILVER_SCHEMA, "silver_telemetry")
    files = table.file_uris(file_pruning_predicate=[("event_date", "=", day.isoformat())])
    if not files:
        raise LakeDataError(f"Silver has no rows for {day.isoformat()} (event_date, UTC) in {path}")
    return table.version(), sorted(files)


def build(pipeline: beam.Pipeline, opts: GoldOptions, files: list, gate=None,
          staging: Optional[StagingArea] = None) -> None:
    """Wire the pipeline: the architecture picture, in code."""
    (
        pipeline
        | "ReadSilverDay" >> ReadSilverDay(opts.lake_root, opts.day, files)
        | "ShardByVehicle" >> ShardByVehicle(opts.shards, staging)
        | "ComputeGold" >> ComputeGold(opts.day)
        | "CommitGold" >> CommitGold(opts.lake_root, opts.day, gate)
    )


def _gate(opts: GoldOptions):
    if not opts.gate:
        return None
    from quality.gates import GoldGate

    return GoldGate(opts.lake_root)


@writes_json_report("gold")
def run_gold(opts: GoldOptions, beam_args: Sequence[str] = ()) -> GoldReport:
    """Aggregate one Silver day; raise a ``LakeError`` (tables untouched) when it cannot."""
    from .commit import check_existing_tables

    from quality.worker import gate_process

    opts.validate()
    # The gate's imports run in a second process meanwhile (see quality.worker).
    with gate_process(opts.gate and opts.local):
        version, files = silver_day_files(opts.lake_root, opts.day)
        check_existing_tables(opts.lake_root)
        staging = StagingArea(opts.lake_root, "gold")
        pipeline = beam.Pipeline(options=pipeline_options(opts.runner, opts.local, beam_args))
        build(pipeline, opts, files, _gate(opts), staging)
        try:
            counters = run_pipeline(pipeline, NAMESPACE)
        finally:
            staging.remove()
    return GoldReport(opts.date, version, counters)


def run(argv: Optional[Sequence[str]] = None) -> GoldReport:
    """Entry point for ``python -m beam_pipelines.gold.pipeline --date ...`` and the DAGs."""
    from lake.settings import Settings

    from .options import parse

    opts, beam_args = parse(argv, Settings.resolve(bootstrap="unused"))
    return run_gold(opts, beam_args)


if __name__ == "__main__":
    sys.exit(script_main(run, sys.argv[1:]))
