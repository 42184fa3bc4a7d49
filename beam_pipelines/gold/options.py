"""Options of the Gold job (``lake gold``), one typed object built from flags."""

from __future__ import annotations

import argparse
import datetime as _dt
from dataclasses import dataclass
from typing import Optional, Sequence

from beam_pipelines.options import DEFAULT_RUNNER, add_flags, build_options, flag, is_local_runner
from lake_core.errors import ConfigError
from lake_core.settings import Settings

__all__ = ["GoldOptions", "add_gold_flags", "options_from_args", "parse"]


@dataclass(frozen=True)
class GoldOptions:
    lake_root: str
    date: str = flag(help="the Silver day (UTC event date) to aggregate, e.g. 2026-03-01")
    shards: int = flag(
        0,
        type=int,
        help="vehicle shards computed in parallel; 0: one per million input rows, at least 4 "
        "(what a worker holds stays flat as the input grows)",
        shown_default="0",
    )
    gate: bool = flag(True, negate="--no-gate", help="publish without running the quality gate")
    runner: str = flag(DEFAULT_RUNNER, help="Beam runner (FnApiRunner is the local one)")
    report_json: Optional[str] = flag(
        None, metavar="PATH", help="write the outcome (counters, or the error) to PATH as JSON, for the DAGs"
    )

    def __post_init__(self) -> None:
        self.validate()

    @property
    def day(self) -> _dt.date:
        return _dt.date.fromisoformat(self.date)

    @property
    def local(self) -> bool:
        return is_local_runner(self.runner)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad value (runs when the object is built)."""
        try:
            _dt.date.fromisoformat(self.date)
        except ValueError:
            raise ConfigError(f"not a date: {self.date!r} (expected YYYY-MM-DD, e.g. 2026-03-01)") from None
        if not 0 <= self.shards <= 4096:
            raise ConfigError("--shards must be 0 (chosen from the input's size) or 1..4096")


def add_gold_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, GoldOptions, "gold")


def options_from_args(args: argparse.Namespace, settings: Settings) -> GoldOptions:
    return build_options(GoldOptions, args, lake_root=settings.lake_root)


def parse(argv: Optional[Sequence[str]], settings: Settings) -> tuple[GoldOptions, list[str]]:
    """Our flags -> ``GoldOptions``; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="gold")
    add_gold_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, settings), beam_args
