"""Options of the Gold job (``lake gold``), one typed object built from flags."""
from __future__ import annotations

import argparse
import datetime as _dt
from dataclasses import dataclass
from typing import Optional, Sequence

from ..silver.options import LOCAL_RUNNERS


@dataclass(frozen=True)
class GoldOptions:
    lake_root: str
    date: str  # the Silver day (event_date, UTC), "2026-03-01"
    runner: str = "FnApiRunner"
    shards: int = 4  # vehicle shards computed in parallel
    gate: bool = True  # run the quality gate before publishing
    report_json: Optional[str] = None  # write the outcome there as JSON (beam_pipelines.reports)

    @property
    def day(self) -> _dt.date:
        return _dt.date.fromisoformat(self.date)

    @property
    def local(self) -> bool:
        return self.runner in LOCAL_RUNNERS

    def validate(self) -> None:
        from lake.errors import ConfigError

        try:
            _dt.date.fromisoformat(self.date)
        except ValueError:
            raise ConfigError(f"not a date: {self.date!r} (expected YYYY-MM-DD, e.g. 2026-03-01)") from None
        if not 1 <= self.shards <= 4096:
            raise ConfigError("--shards must be 1..4096")


def add_gold_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("gold")
    g.add_argument("--date", required=True, help="the Silver day (UTC event date) to aggregate, e.g. 2026-03-01")
    g.add_argument("--shards", type=int, default=4, help="vehicle shards computed in parallel (default 4)")
    g.add_argument("--no-gate", action="store_true", help="publish without running the quality gate")
    g.add_argument("--runner", default="FnApiRunner", help="Beam runner (default FnApiRunner, the local one)")
    g.add_argument("--report-json", metavar="PATH",
                   help="write the outcome (counters, or the error) to PATH as JSON, for the DAGs")


def options_from_args(args: argparse.Namespace, settings) -> GoldOptions:
    return GoldOptions(lake_root=settings.lake_root, date=args.date, runner=args.runner, shards=args.shards,
                       gate=not args.no_gate, report_json=args.report_json)


def parse(argv: Optional[Sequence[str]], settings) -> tuple[GoldOptions, list]:
    """Our flags -> ``GoldOptions``; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="gold")
    add_gold_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, settings), beam_args
