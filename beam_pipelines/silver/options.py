"""Options of the Silver job (``lake silver``), one typed object built from flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Sequence

from beam_pipelines.options import DEFAULT_RUNNER, add_flags, build_options, flag, is_local_runner
from lake_core.errors import ConfigError
from lake_core.settings import Settings
from lake_schemas.paths import parse_hour
from lake_schemas.rules import QUARANTINE_RATE_MAX

__all__ = ["SilverOptions", "add_silver_flags", "options_from_args", "parse"]


@dataclass(frozen=True)
class SilverOptions:
    lake_root: str
    hour: str = flag(help="the Bronze hour to process, UTC, e.g. 2026-03-01T08")
    shards: int = flag(
        0,
        type=int,
        help="vehicle shards cleaned in parallel (each holds whole vehicles); 0: one per million input rows, "
        "at least 4 (what a worker holds stays flat as the input grows)",
        shown_default="0",
    )
    gate: bool = flag(True, negate="--no-gate", help="publish without running the quality gate")
    max_quarantine_rate: float = flag(
        QUARANTINE_RATE_MAX,
        type=float,
        metavar="R",
        help="the gate fails when more than this share of the hour is quarantined",
    )
    require_complete: bool = flag(
        False, switch=True, help="refuse an hour the ingest has not closed (_COMPLETE) instead of warning"
    )
    runner: str = flag(DEFAULT_RUNNER, help="Beam runner (FnApiRunner is the local one)")
    report_json: Optional[str] = flag(
        None, metavar="PATH", help="write the outcome (counters, or the error) to PATH as JSON, for the DAGs"
    )
    publish: bool = True  # False: run up to the gate and write nothing (lake validate silver --hour)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def hour_ms(self) -> int:
        return int(parse_hour(self.hour).timestamp() * 1000)

    @property
    def local(self) -> bool:
        return is_local_runner(self.runner)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad value (runs when the object is built)."""
        try:
            parse_hour(self.hour)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not 0 <= self.shards <= 4096:
            raise ConfigError("--shards must be 0 (chosen from the input's size) or 1..4096")
        if not 0.0 <= self.max_quarantine_rate <= 1.0:
            raise ConfigError("--max-quarantine-rate must be between 0 and 1")


def add_silver_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SilverOptions, "silver")


def options_from_args(args: argparse.Namespace, settings: Settings) -> SilverOptions:
    return build_options(SilverOptions, args, lake_root=settings.lake_root)


def parse(argv: Optional[Sequence[str]], settings: Settings) -> tuple[SilverOptions, list[str]]:
    """Our flags -> ``SilverOptions``; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="silver")
    add_silver_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, settings), beam_args
