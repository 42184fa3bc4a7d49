"""The Silver job: one Bronze hour -> ``silver/telemetry`` and ``silver/quarantine``.

    ReadBronzeHour | ParseTelemetry | ShardByVehicle | CleanTelemetry | CommitSilver

Everything that can be refused is refused before the pipeline starts (no
such hour, a corrupt file, a Silver table of another schema) and the commit
is the pipeline's last step, after the gate: a failure anywhere leaves every
table as it was.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import apache_beam as beam

from beam_pipelines.batch import pipeline_options, run_pipeline
from beam_pipelines.reports import quarantine_counts, report_fields, script_main, writes_json_report
from beam_pipelines.sharding import shard_count
from beam_pipelines.silver.commit import Gate, check_existing_tables
from beam_pipelines.silver.options import SilverOptions, parse
from beam_pipelines.silver.transforms import (
    NAMESPACE,
    CleanTelemetry,
    CommitSilver,
    ParseTelemetry,
    ReadBronzeHour,
    ShardByVehicle,
)
from beam_pipelines.staging import StagingArea
from lake_core.bronze.hour_files import BronzeHour, check_bronze_file, list_bronze_hour
from lake_core.errors import LakeDataError
from lake_core.settings import Settings
from quality.gates import SilverGate
from quality.worker import gate_process

__all__ = ["SilverReport", "build", "run_silver", "run"]


@dataclass
class SilverReport:
    """What one Silver run did; every count is a field (a misspelt one is an error, not a 0)."""

    hour: str
    complete: bool  # the Bronze hour was closed by the ingest
    files: int
    bronze_rows: int = 0
    silver_candidates: int = 0  # rows left after quarantine and dedup within the hour
    inserted: int = 0  # new Silver rows
    already_in_silver: int = 0  # candidates Silver held from an earlier hour or run
    duplicates: int = 0
    positions_paired: int = 0  # lat+lon signal pairs folded into one row
    ts_corrected: int = 0  # event times replaced by server time (rule 1)
    silver_rows: int = 0
    quarantine_rows: int = 0
    quarantine_commits: int = 0
    bronze_files: int = 0
    gate_warnings: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)  # reason -> rows
    counters: dict[str, int] = field(default_factory=dict)  # every Beam counter, as the JSON report keeps them

    @classmethod
    def from_counters(cls, hour: str, complete: bool, files: int, counters: dict[str, int]) -> SilverReport:
        return cls(
            hour,
            complete,
            files,
            **report_fields(cls, counters),
            quarantined=quarantine_counts(counters),
            counters=dict(counters),
        )

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantined.items())) or "none"
        return (
            f"silver {self.hour}: {self.bronze_rows:,} bronze rows from {self.files} file(s) -> "
            f"{self.inserted:,} new silver rows ({self.already_in_silver:,} already there, "
            f"{self.duplicates:,} duplicates, {self.positions_paired:,} lat+lon pairs), "
            f"quarantined: {reasons}{'' if self.complete else ' [hour not complete yet]'}"
        )


def build(
    pipeline: beam.Pipeline,
    opts: SilverOptions,
    bronze: BronzeHour,
    gate: Optional[Gate] = None,
    staging: Optional[StagingArea] = None,
) -> None:
    """Wire the pipeline: the architecture picture, in code."""
    (
        pipeline
        | "ReadBronzeHour" >> ReadBronzeHour(opts.lake_root, bronze.directory, bronze.files)
        | "ParseTelemetry" >> ParseTelemetry()
        | "ShardByVehicle" >> ShardByVehicle(opts.shards, staging)
        | "CleanTelemetry" >> CleanTelemetry(opts.lake_root, bronze.hour, staging)
        | "CommitSilver" >> CommitSilver(opts.lake_root, bronze.hour, gate, staging, opts.publish)
    )


def _gate(opts: SilverOptions) -> Optional[SilverGate]:
    if not opts.gate:
        return None

    return SilverGate(opts.lake_root, max_quarantine_rate=opts.max_quarantine_rate, publishing=opts.publish)


@writes_json_report("silver")
def run_silver(opts: SilverOptions, beam_args: Sequence[str] = ()) -> SilverReport:
    """Process one Bronze hour; raise a ``LakeError`` (tables untouched) when it cannot."""
    # The gate's imports run in a second process meanwhile (see quality.worker).
    with gate_process(opts.gate and opts.local):
        bronze = list_bronze_hour(opts.lake_root, opts.hour_ms)
        if opts.require_complete and not bronze.complete:
            raise LakeDataError(f"Bronze hour {bronze.hour} is not complete yet (no _COMPLETE marker)")
        rows = sum(check_bronze_file(opts.lake_root, f"{bronze.directory}/{name}") for name in bronze.files)
        opts = dataclasses.replace(opts, shards=shard_count(rows, opts.shards))
        check_existing_tables(opts.lake_root)
        staging = StagingArea(opts.lake_root, "silver")
        pipeline = beam.Pipeline(options=pipeline_options(opts.runner, opts.local, beam_args))
        build(pipeline, opts, bronze, _gate(opts), staging)
        try:
            counters = run_pipeline(pipeline, NAMESPACE)
        finally:
            staging.remove()
    return SilverReport.from_counters(bronze.hour, bronze.complete, len(bronze.files), counters)


def run(argv: Optional[Sequence[str]] = None) -> SilverReport:
    """Entry point for ``python -m beam_pipelines.silver.pipeline --hour ...`` and the DAGs."""
    opts, beam_args = parse(argv, Settings.resolve(bootstrap="unused"))
    return run_silver(opts, beam_args)


if __name__ == "__main__":
    sys.exit(script_main(run, sys.argv[1:]))
