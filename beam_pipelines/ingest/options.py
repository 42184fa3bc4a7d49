"""Options of the streaming ingest, one typed object built from flags."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Sequence

LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "PrismRunner"}


@dataclass(frozen=True)
class IngestOptions:
    lake_root: str
    bootstrap: str
    topic: str
    dlq_topic: Optional[str]
    runner: str = "FnApiRunner"
    buffer_seconds: float = 300.0
    buffer_bytes: int = 64 * 1024 * 1024
    until_idle: Optional[float] = None  # drain, close every hour, exit
    follow: bool = False
    max_seconds: Optional[float] = None
    allowed_lateness_seconds: float = 120.0
    idle_flush_seconds: float = 30.0  # --follow: end a pass early when the topic is quiet this long
    poll_batch: int = 5000
    kafka_source: str = "native"  # "native" | "xlang" (Beam's Java ReadFromKafka, Flink/Dataflow)
    progress: bool = True
    validate_processes: Optional[int] = None  # helper processes validating on the local runner; None: default

    @property
    def helper_processes(self) -> int:
        """How many validation processes this run starts: only the local runner's native source uses them."""
        if not self.local or self.kafka_source != "native":
            return 0
        if self.validate_processes is not None:
            return self.validate_processes
        from .validation_processes import default_processes

        return default_processes()

    @property
    def local(self) -> bool:
        return self.runner in LOCAL_RUNNERS

    def validate(self) -> None:
        from lake.errors import ConfigError

        if self.buffer_seconds <= 0 or self.buffer_bytes <= 0:
            raise ConfigError("--buffer-seconds and --buffer-bytes must be positive")
        if self.until_idle is not None and self.until_idle <= 0:
            raise ConfigError("--until-idle must be a positive number of seconds")
        if self.until_idle is not None and self.follow:
            raise ConfigError("--until-idle and --follow exclude each other")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError("--max-seconds must be positive")
        if self.poll_batch < 1:
            raise ConfigError("--poll-batch must be at least 1")
        if self.validate_processes is not None and self.validate_processes < 0:
            raise ConfigError("--validate-processes must be 0 or more")
        if self.kafka_source not in ("native", "xlang"):
            raise ConfigError("--kafka-source must be native or xlang")
        if self.kafka_source == "xlang" and self.local:
            raise ConfigError("--kafka-source=xlang needs a portable runner (Flink, Dataflow): "
                              "it runs Beam's Java ReadFromKafka")


def add_ingest_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("ingest")
    g.add_argument("--until-idle", type=float, metavar="S",
                   help="drain the topic: stop when every partition was idle S seconds, close every hour, exit 0")
    g.add_argument("--follow", action="store_true", help="run pass after pass until stopped (Ctrl-C ends "
                   "the pass in flight, then exits 0); the default when --until-idle is not given")
    g.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds (the pass in flight commits)")
    g.add_argument("--buffer-seconds", type=float, default=300.0,
                   help="buffer a pass at most this long before writing files (default 300)")
    g.add_argument("--buffer-bytes", type=_size, default=64 * 1024 * 1024,
                   help="or until a partition read this many bytes (default 64MiB; suffixes K, M, G)")
    g.add_argument("--allowed-lateness", type=float, default=120.0, metavar="S",
                   help="an hour closes when every partition delivered a record S seconds past its end (default 120)")
    g.add_argument("--idle-flush", type=float, default=30.0, metavar="S",
                   help="--follow: end a pass early when the topic was quiet S seconds (default 30)")
    g.add_argument("--poll-batch", type=int, default=5000, help="records per Beam element (default 5000)")
    g.add_argument("--kafka-source", choices=["native", "xlang"], default="native",
                   help="native: the Python splittable DoFn; xlang: Beam's Java ReadFromKafka (Flink/Dataflow)")
    g.add_argument("--validate-processes", type=int, metavar="N",
                   help="local runner: validate in N helper processes while the runner reads on (default: one "
                   "per core, at most 4, or $LAKE_VALIDATE_PROCESSES; 0: in the runner's process)")
    g.add_argument("--runner", default="FnApiRunner", help="Beam runner (default FnApiRunner, the local one)")
    g.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M)") from None


def options_from_args(args: argparse.Namespace, settings) -> IngestOptions:
    return IngestOptions(
        lake_root=settings.lake_root, bootstrap=settings.bootstrap, topic=settings.topic,
        dlq_topic=settings.dlq_topic, runner=args.runner, buffer_seconds=args.buffer_seconds,
        buffer_bytes=args.buffer_bytes, until_idle=args.until_idle, follow=args.follow,
        max_seconds=args.max_seconds, allowed_lateness_seconds=args.allowed_lateness,
        idle_flush_seconds=args.idle_flush, poll_batch=args.poll_batch, kafka_source=args.kafka_source,
        progress=not args.no_progress, validate_processes=args.validate_processes,
    )


def parse(argv: Optional[Sequence[str]], settings) -> tuple[IngestOptions, list]:
    """Our flags -> ``IngestOptions``; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="ingest")
    add_ingest_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    return options_from_args(args, settings), beam_args
