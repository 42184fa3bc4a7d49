"""Options of the Silver job (``lake silver``), one typed object built from flags."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Sequence

from lake_schemas.paths import parse_hour
from lake_schemas.rules import QUARANTINE_RATE_MAX

LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "PrismRunner"}


@dataclass(frozen=True)
class SilverOptions:
    lake_root: str
    hour: str  # the Bronze hour, "2026-03-01T08" (UTC)
    runner: str = "FnApiRunner"
    shards: int = 4  # vehicle shards cleaned in parallel (each holds whole vehicles)
    gate: bool = True  # run the quality gate before publishing
    max_quarantine_rate: float = QUARANTINE_RATE_MAX
    require_complete: bool = False  # refuse an hour without _COMPLETE instead of warning
    publish: bool = True  # False: run up to the gate and write nothing (lake validate silver --hour)
    report_json: Optional[str] = None  # write the outcome there as JSON (beam_pipelines.reports)

    @property
    def hour_ms(self) -> int:
        return int(parse_hour(self.hour).timestamp() * 1000)

    @property
    def local(self) -> bool:
        return self.runner in LOCAL_RUNNERS

    def validate(self) -> None:
        from lake.errors import ConfigError

        try:
            parse_hour(self.hour)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not 1 <= self.shards <= 4096:
            raise ConfigError("--shards must be 1..4096")
        if not 0.0 <= self.max_quarantine_rate <= 1.0:
            raise ConfigError("--max-quarantine-rate must be between 0 and 1")


def add_silver_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("silver")
    g.add_argument("--hour", required=True, help="the Bronze hour to process, UTC, e.g. 2026-03-01T08")
    g.add_argument("--shards", type=int, default=4, help="vehicle shards cleaned in parallel (default 4)")
    g.add_argument("--no-gate", action="store_true", help="publish without running the quality gate")
    g.add_argument("--max-quarantine-rate", type=float, default=QUARANTINE_RATE_MAX, metavar="R",
                   help=f"the gate fails when more than this share of the hour is quarantined "
                        f"(default {QUARANTINE_RATE_MAX})")
    g.add_argument("--require-complete", action="store_true",
                   help="refuse an hour the ingest has not closed (_COMPLETE) instead of warning")
    g.add_argument("--runner", default="FnApiRunner", help="Beam runner (default FnApiRunner, the local one)")
    g.add_argument("--report-json", metavar="PATH",
                   help="write the outcome (counters, or the error) to PATH as JSON, for the DAGs")


def options_from_args(args: argparse.Namespace, settings) -> SilverOptions:
    return SilverOptions(lake_root=settings.lake_root, hour=args.hour, runner=args.runner, shards=args.shards,
                         gate=not args.no_gate, max_quarantine_rate=args.max_quarantine_rate,
                         require_complete=args.require_complete, report_json=args.report_json)


def parse(argv: Optional[Sequence[str]], settings) -> tuple[SilverOptions, list]:
    """Our flags -> ``SilverOptions``; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="silver")
    add_silver_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, settings), beam_args
