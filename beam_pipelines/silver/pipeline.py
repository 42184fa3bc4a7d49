"""The Silver job: one Bronze hour -> ``silver/telemetry`` and ``silver/quarantine``.

    ReadBronzeHour | ParseTelemetry | ShardByVehicle | CleanTelemetry | CommitSilver

Everything that can be refused is refused before the pipeline starts (no
such hour, a corrupt file, a Silver table of another schema) and the commit
is the pipeline's last step, after the gate: a failure anywhere leaves every
table as it was.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import apache_beam as beam

from ..batch import pipeline_options, run_pipeline
from ..reports import script_main, writes_json_report
from ..staging import StagingArea
from .bronze_input import BronzeHour, check_bronze_file, list_bronze_hour
from .options import SilverOptions
from .transforms import NAMESPACE, CleanTelemetry, CommitSilver, ParseTelemetry, ReadBronzeHour, ShardByVehicle

__all__ = ["SilverReport", "build", "run_silver", "run"]


@dataclass
class SilverReport:
    hour: str
    complete: bool  # the Bronze hour was closed by the ingest
    files: int
    counters: dict = field(default_factory=dict)

    def __getattr__(self, name: str) -> int:  # report.inserted, report.bronze_rows...
        if name.startswith("__"):
            raise AttributeError(name)
        return int(self.counters.get(name, 0))

    @property
    def quarantined(self) -> dict:
        return {k.removeprefix("quarantined_"): v for k, v in self.counters.items()
                if k.startswith("quarantined_") and v}

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantined.items())) or "none"
        return (f"silver {self.hour}: {self.bronze_rows:,} bronze rows from {self.files} file(s) -> "
                f"{self.inserted:,} new silver rows ({self.already_in_silver:,} already there, "
                f"{self.duplicates:,} duplicates, {self.positions_paired:,} lat+lon pairs), "
                f"quarantined: {reasons}{'' if self.complete else ' [hour not complete yet]'}")


def build(pipeline: beam.Pipeline, opts: SilverOptions, bronze: BronzeHour, gate=None,
          staging: Optional[StagingArea] = None) -> None:
    """Wire the pipeline: the architecture picture, in code."""
    (
        pipeline
        | "ReadBronzeHour" >> ReadBronzeHour(opts.lake_root, bronze.directory, bronze.files)
        | "ParseTelemetry" >> ParseTelemetry()
        | "ShardByVehicle" >> ShardByVehicle(opts.shards, staging)
        | "CleanTelemetry" >> CleanTelemetry(opts.lake_root, bronze.hour, staging)
        | "CommitSilver" >> CommitSilver(opts.lake_root, bronze.hour, gate, staging, opts.publish)
    )


def _gate(opts: SilverOptions):
    if not opts.gate:
        return None
    from quality.gates import SilverGate

    return SilverGate(opts.lake_root, max_quarantine_rate=opts.max_quarantine_rate, publishing=opts.publish)


@writes_json_report("silver")
def run_silver(opts: SilverOptions, beam_args: Sequence[str] = ()) -> SilverReport:
    """Process one Bronze hour; raise a ``LakeError`` (tables untouched) when it cannot."""
    from lake.errors import LakeDataError

    from .commit import check_existing_tables

    from quality.worker import gate_process

    opts.validate()
    # The gate's imports run in a second process meanwhile (see quality.worker).
    with gate_process(opts.gate and opts.local):
        bronze = list_bronze_hour(opts.lake_root, opts.hour_ms)
        if opts.require_complete and not bronze.complete:
            raise LakeDataError(f"Bronze hour {bronze.hour} is not complete yet (no _COMPLETE marker)")
        for name in bronze.files:
            check_bronze_file(opts.lake_root, f"{bronze.directory}/{name}")
        check_existing_tables(opts.lake_root)
        staging = StagingArea(opts.lake_root, "silver")
        pipeline = beam.Pipeline(options=pipeline_options(opts.runner, opts.local, beam_args))
        build(pipeline, opts, bronze, _gate(opts), staging)
        try:
            counters = run_pipeline(pipeline, NAMESPACE)
        finally:
            staging.remove()
    return SilverReport(bronze.hour, bronze.complete, len(bronze.files), counters)


def run(argv: Optional[Sequence[str]] = None) -> SilverReport:
    """Entry point for ``python -m beam_pipelines.silver.pipeline --hour ...`` and the DAGs."""
    from lake.settings import Settings

    from .options import parse

    opts, beam_args = parse(argv, Settings.resolve(bootstrap="unused"))
    return run_silver(opts, beam_args)


if __name__ == "__main__":
    sys.exit(script_main(run, sys.argv[1:]))
