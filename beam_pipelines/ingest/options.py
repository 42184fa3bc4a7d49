"""Options of the streaming ingest (``lake ingest``), one typed object built from flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Sequence

from beam_pipelines.ingest.validation_processes import default_processes
from beam_pipelines.options import DEFAULT_RUNNER, LOCAL_RUNNERS, add_flags, build_options, flag, is_local_runner
from lake_core.errors import ConfigError
from lake_core.settings import Settings

__all__ = ["IngestOptions", "LOCAL_RUNNERS", "add_ingest_flags", "options_from_args", "parse"]


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M)") from None


@dataclass(frozen=True)
class IngestOptions:
    lake_root: str
    bootstrap: str
    topic: str
    dlq_topic: Optional[str]
    until_idle: Optional[float] = flag(
        None,
        metavar="S",
        type=float,
        help="drain the topic: stop when every partition was idle S seconds, close every hour, exit 0",
    )
    close_open_hours: bool = flag(
        False,
        switch=True,
        help="with --until-idle: close every hour Bronze holds once drained, also those not over on this "
        "machine's clock (replays of past data)",
    )
    new_generation: bool = flag(
        False,
        switch=True,
        help="after the topic was recreated or the broker lost its log (the ingest stops with exit 3 and "
        "says so): read the topic from its start into a new generation of Bronze files",
    )
    follow: bool = flag(
        False,
        switch=True,
        help="run pass after pass until stopped (Ctrl-C ends the pass in flight, then exits 0); "
        "the default when --until-idle is not given",
    )
    max_seconds: Optional[float] = flag(
        None, type=float, metavar="S", help="stop after S seconds (the pass in flight commits)"
    )
    buffer_seconds: float = flag(
        300.0, type=float, help="buffer a pass at most this long before writing files", shown_default="300"
    )
    buffer_bytes: int = flag(
        64 * 1024 * 1024,
        type=_size,
        help="or until a partition read this many bytes (suffixes K, M, G)",
        shown_default="64MiB",
    )
    allowed_lateness_seconds: float = flag(
        120.0,
        name="--allowed-lateness",
        type=float,
        metavar="S",
        help="an hour closes when every partition delivered a record S seconds past its end",
        shown_default="120",
    )
    idle_flush_seconds: float = flag(
        30.0,
        name="--idle-flush",
        type=float,
        metavar="S",
        help="--follow: end a pass early when the topic was quiet S seconds",
        shown_default="30",
    )
    poll_batch: int = flag(5000, type=int, help="records per Beam element")
    kafka_source: str = flag(
        "native",
        choices=["native", "xlang"],
        help="native: the Python splittable DoFn; xlang: Beam's Java ReadFromKafka (Flink/Dataflow)",
    )
    validate_processes: Optional[int] = flag(
        None,
        type=int,
        metavar="N",
        help="local runner: validate in N helper processes while the runner reads on (default: one "
        "per core, at most 4, or $LAKE_VALIDATE_PROCESSES; 0: in the runner's process)",
    )
    runner: str = flag(DEFAULT_RUNNER, help="Beam runner (FnApiRunner is the local one)")
    progress: bool = flag(True, negate="--no-progress", help="no progress lines on stderr")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def helper_processes(self) -> int:
        """How many validation processes this run starts: only the local runner's native source uses them."""
        if not self.local or self.kafka_source != "native":
            return 0
        if self.validate_processes is not None:
            return self.validate_processes
        # Local import: validation_processes reads the environment, only when a run needs it.

        return default_processes()

    @property
    def local(self) -> bool:
        return is_local_runner(self.runner)

    @property
    def unbounded(self) -> bool:
        """One streaming pipeline that runs until cancelled (or ``--max-seconds``): a runner in other
        processes (Flink, Dataflow, PortableRunner) without ``--until-idle``. Otherwise, on any runner,
        the run is bounded passes: batch pipelines whose files the driver commits and whose hours it
        closes when each ends."""
        return not self.local and self.until_idle is None

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad value (runs when the object is built)."""
        if self.buffer_seconds <= 0 or self.buffer_bytes <= 0:
            raise ConfigError("--buffer-seconds and --buffer-bytes must be positive")
        if self.until_idle is not None and not self.until_idle > 0:
            raise ConfigError("--until-idle must be a positive number of seconds")
        if self.close_open_hours and self.until_idle is None:
            raise ConfigError("--close-open-hours goes with --until-idle (it closes hours once the topic is drained)")
        if self.until_idle is not None and self.follow:
            raise ConfigError("--until-idle and --follow exclude each other")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError("--max-seconds must be positive")
        if self.poll_batch < 1:
            raise ConfigError("--poll-batch must be at least 1")
        if self.validate_processes is not None and self.validate_processes < 0:
            raise ConfigError("--validate-processes must be 0 or more")
        if self.kafka_source not in ("native", "xlang"):
            raise ConfigError("--kafka-source must be native or xlang")
        if self.kafka_source == "xlang" and self.local:
            raise ConfigError(
                "--kafka-source=xlang needs a portable runner (Flink, Dataflow): it runs Beam's Java ReadFromKafka"
            )
        if self.kafka_source == "xlang" and self.until_idle is not None:
            raise ConfigError(
                "--kafka-source=xlang reads without end (Beam's Java ReadFromKafka): "
                "--until-idle needs the native source"
            )


def add_ingest_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, IngestOptions, "ingest")


def options_from_args(args: argparse.Namespace, settings: Settings) -> IngestOptions:
    return build_options(
        IngestOptions,
        args,
        lake_root=settings.lake_root,
        bootstrap=settings.bootstrap,
        topic=settings.topic,
        dlq_topic=settings.dlq_topic,
    )


def parse(argv: Optional[Sequence[str]], settings: Settings) -> tuple[IngestOptions, list[str]]:
    """Our flags -> ``IngestOptions``; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="ingest")
    add_ingest_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, settings), beam_args
