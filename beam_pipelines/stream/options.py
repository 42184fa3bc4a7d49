"""Options of the hot path (``lake stream``), one typed object built from flags and the environment."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Sequence

from beam_pipelines.options import DEFAULT_RUNNER, add_flags, build_options, flag, is_local_runner
from lake_core.errors import ConfigError
from lake_core.hot_store import check_dsn
from lake_core.settings import Settings, env
from lake_schemas.geofence import GeofenceError, OperatingArea, default_area, load_area
from lake_schemas.hot import ALERTS_TOPIC, DEFAULT_HOT_DSN, DEFAULT_RULES, HotRules

__all__ = ["StreamOptions", "add_stream_flags", "options_from_args", "parse"]


@dataclass(frozen=True)
class StreamOptions:
    bootstrap: str
    topic: str
    dsn: str = flag(
        DEFAULT_HOT_DSN,
        name="--hot-dsn",
        metavar="DSN",
        help="the hot store (default: env LAKE_HOT_DSN, else a database lake_hot on the local server)",
        shown_default="",
    )
    until_idle: Optional[float] = flag(
        None, metavar="S", type=float, help="drain the topic: stop when every partition was idle S seconds, exit 0"
    )
    follow: bool = flag(
        False, switch=True, help="run until stopped (the default without --until-idle); Ctrl-C commits, then exits 0"
    )
    max_seconds: Optional[float] = flag(None, type=float, metavar="S", help="stop after S seconds")
    pass_seconds: float = flag(
        60.0,
        type=float,
        metavar="S",
        help="local runner: a pass lasts at most S seconds (state is saved between passes; outputs commit every batch)",
        shown_default="60",
    )
    commit_seconds: float = flag(
        1.0,
        type=float,
        metavar="S",
        help="commit each partition at most every S seconds (a vehicle's rows are written once per interval; "
        "the rows' delay grows by up to S)",
        shown_default="1",
    )
    hot_days: int = flag(DEFAULT_RULES.hot_days, type=int, metavar="N", help="keep N days in the hot tables")
    snapshot_seconds: float = flag(
        30.0, type=float, metavar="S", help="save each partition's state at least every S seconds", shown_default="30"
    )
    alerts_topic: str = flag(ALERTS_TOPIC, metavar="TOPIC", help="where alert events go")
    geofence: Optional[str] = flag(
        None,
        metavar="FILE",
        help="GeoJSON of the operating areas (default: env LAKE_GEOFENCE, else the simulator's city)",
        shown_default="",
    )
    webhook: Optional[str] = flag(
        None, metavar="URL", help="POST every alert event here too (default: env LAKE_ALERT_WEBHOOK)", shown_default=""
    )
    poll_batch: int = flag(5000, type=int, help="records per Beam element")
    workers: int = flag(
        1,
        type=int,
        metavar="N",
        help="local runner: N processes, each streaming the partitions p with p mod N = its number (a "
        "partition's state and commits stay in one process; this one sends the alerts); the rules are Python, "
        "so a catch-up wants one per core",
    )
    worker: Optional[str] = flag(
        None, metavar="I/N", help="be worker I of N (what --workers starts; not for hand use)", shown_default=""
    )
    runner: str = flag(DEFAULT_RUNNER, help="Beam runner (FnApiRunner is the local one)")
    progress: bool = flag(True, negate="--no-progress", help="no progress lines on stderr")
    rules: HotRules = DEFAULT_RULES

    def __post_init__(self) -> None:
        check_dsn(self.dsn)
        if self.until_idle is not None and not self.until_idle > 0:
            raise ConfigError("--until-idle must be a positive number of seconds")
        if self.until_idle is not None and self.follow:
            raise ConfigError("--until-idle and --follow exclude each other")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError("--max-seconds must be positive")
        if not self.pass_seconds > 0 or not self.snapshot_seconds > 0 or self.commit_seconds < 0:
            raise ConfigError("--pass-seconds and --snapshot-seconds must be positive")
        if self.hot_days < 1:
            raise ConfigError("--hot-days must be at least 1")
        if self.poll_batch < 1:
            raise ConfigError("--poll-batch must be at least 1")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"--workers must be from 1 to 64, got {self.workers}")
        if self.worker is not None:
            self.worker_slot()  # a malformed I/N fails here
        if self.workers > 1 and not is_local_runner(self.runner):
            raise ConfigError("--workers is the local runner's: on Flink or Dataflow the runner's parallelism applies")
        if self.workers > 1 and self.rules != DEFAULT_RULES:
            raise ConfigError("--workers > 1 runs the rules file's defaults only (workers are started from flags)")
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ConfigError(f"the alert webhook must be an http(s) URL, not {self.webhook!r}")
        self.area()  # a bad geofence fails here, before any connection

    def worker_slot(self) -> tuple[int, int]:
        """``(I, N)`` of ``--worker I/N``: this process streams the partitions p with p mod N = I."""
        try:
            index, count = (int(x) for x in str(self.worker).split("/"))
        except ValueError:
            raise ConfigError(f"--worker must be I/N, e.g. 0/2, got {self.worker!r}") from None
        if not 0 <= index < count:
            raise ConfigError(f"--worker {self.worker}: I must be from 0 to N-1")
        return index, count

    def my_partitions(self, partitions: int) -> list:
        """The topic's partitions this process streams (all but with ``--worker``)."""
        if self.worker is None:
            return list(range(partitions))
        index, count = self.worker_slot()
        return [p for p in range(partitions) if p % count == index]

    @property
    def local(self) -> bool:
        return is_local_runner(self.runner)

    @property
    def following(self) -> bool:
        """Following the live topic (offline by the clock), not draining it (offline by event time only)."""
        return self.until_idle is None

    def area(self) -> OperatingArea:
        if self.geofence is None:
            return default_area()
        try:
            return load_area(self.geofence)
        except GeofenceError as exc:
            raise ConfigError(str(exc)) from None


def add_stream_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, StreamOptions, "stream")


def options_from_args(args: argparse.Namespace, settings: Settings) -> StreamOptions:
    for name, var in (("dsn", "LAKE_HOT_DSN"), ("geofence", "LAKE_GEOFENCE"), ("webhook", "LAKE_ALERT_WEBHOOK")):
        if getattr(args, name, None) in (None, DEFAULT_HOT_DSN) and env(var):
            setattr(args, name, env(var))
    return build_options(StreamOptions, args, bootstrap=settings.bootstrap, topic=settings.topic)


def parse(argv: Optional[Sequence[str]], settings: Settings) -> tuple[StreamOptions, list[str]]:
    """Our flags -> ``StreamOptions``; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="stream")
    add_flags(parser, StreamOptions, "stream")
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, settings), beam_args
