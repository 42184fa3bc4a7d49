"""The streaming ingest pipeline: Kafka -> Bronze, run pass after pass.

    PartitionStarts | ReadKafkaPartitions | ValidateTelemetry | WriteBronze

Locally (FnApiRunner) a run is one pass: bounded by the buffer (time, bytes)
or idleness, its files are written when it ends, and the next pass resumes
from what Bronze holds. On Flink/Dataflow the same transforms run as one
unbounded pipeline whose buffer is a trigger.
"""
from __future__ import annotations

import contextlib
import io
import logging
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from .bronze_state import BronzeStore
from .bronze_writer import NAMESPACE, WriteBronze
from .kafka_source import (
    _QUIET,
    _READERS,
    PASS_END,
    STOP_REQUESTED,
    PartitionStart,
    PassBounds,
    ReadKafkaCrossLanguage,
    ReadKafkaPartitions,
    close_consumers,
)
from .options import IngestOptions
from .partition_fetcher import fetcher_for
from .validate import ValidateTelemetry
from .validation_processes import validation_processes

LOG = logging.getLogger(__name__)


@dataclass
class PassReport:
    records: int = 0
    bronze_rows: int = 0
    reject_rows: int = 0
    files: int = 0
    dlq_failed: int = 0
    seconds: float = 0.0
    ended_by: dict = field(default_factory=dict)
    busy_ms: dict = field(default_factory=dict)  # time spent polling, validating, committing
    closed_hours: list = field(default_factory=list)


@dataclass
class IngestReport:
    passes: list = field(default_factory=list)
    recovered_files: list = field(default_factory=list)

    def total(self, attr: str):
        return sum(getattr(p, attr) for p in self.passes)


def build(pipeline: beam.Pipeline, opts: IngestOptions, starts: list, bounds: PassBounds, state) -> None:
    """Wire the pipeline: the architecture picture, in code."""
    streaming = not opts.local
    if opts.kafka_source == "xlang":
        batches = pipeline | "ReadKafkaCrossLanguage" >> ReadKafkaCrossLanguage(opts.bootstrap, opts.topic,
                                                                                opts.poll_batch)
    else:
        batches = (pipeline
                   # Reshuffled on a distributed runner, so partitions spread over its workers; the
                   # local runner has one worker, and the reshuffle costs it two stages a pass.
                   | "PartitionStarts" >> beam.Create(starts, reshuffle=streaming)
                   | "ReadKafkaPartitions" >> ReadKafkaPartitions(opts.bootstrap, bounds))
    (
        batches
        | "ValidateTelemetry" >> ValidateTelemetry()
        | "WriteBronze" >> WriteBronze(
            opts.lake_root, opts.bootstrap, opts.topic, opts.dlq_topic, state.open_from_ms, state.watermarks,
            streaming_buffer_seconds=opts.buffer_seconds if streaming else None,
            close_hours=(len(starts), int(opts.allowed_lateness_seconds * 1000)) if streaming else None,
        )
    )


def _check_beam_args(args: list, local: bool) -> None:
    """Refuse, in one line, what Beam would drop with a warning (an unknown
    flag), print pages of usage for (a bad value), or run wrongly (workers)."""
    from apache_beam.options.pipeline_options import DirectOptions

    from lake.errors import ConfigError

    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    usage = io.StringIO()
    try:
        beam_log.setLevel(logging.ERROR)  # "Discarding unparseable args": we say it ourselves
        with contextlib.redirect_stderr(usage):
            options = PipelineOptions(args)
            known = set(options.get_all_options())
            unknown = set(options.get_all_options(retain_unknown_options=True)) - known
            workers = options.view_as(DirectOptions).direct_num_workers
    except SystemExit:  # argparse: a bad value for a Beam option
        lines = usage.getvalue().strip().splitlines()
        detail = lines[-1].split("error: ", 1)[-1] if lines else " ".join(args)
        raise ConfigError(f"bad Beam pipeline option: {detail}") from None
    finally:
        beam_log.setLevel(level)
    flags = [a for a in args if a.startswith("-") and a.lstrip("-").split("=", 1)[0].replace("-", "_") in unknown]
    if flags:
        raise ConfigError(f"unrecognized arguments: {' '.join(flags)} (neither an ingest flag nor a Beam "
                          "pipeline option; see `lake ingest --help`)")
    if local and workers != 1:
        raise ConfigError("--direct_num_workers must be 1: FnApiRunner with more workers drops "
                          "deferred splittable-DoFn work (measured: half the rows lost)")


def beam_options(opts: IngestOptions, beam_args: Sequence[str]) -> PipelineOptions:
    args = list(beam_args)
    _check_beam_args(args, opts.local)
    if opts.local:
        args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    else:
        args += ["--streaming"]
    return PipelineOptions([f"--runner={opts.runner}", *args])


def run_pass(opts: IngestOptions, beam_args: Sequence[str], store: BronzeStore, partitions: int,
             bounds: PassBounds) -> PassReport:
    state = store.state(partitions)
    pass_id = uuid.uuid4().hex
    starts = [PartitionStart(opts.topic, p, state.next_offsets[p], pass_id) for p in range(partitions)]
    started = time.monotonic()
    if opts.local and opts.kafka_source == "native":  # the readers run in this process: assign them all at once
        fetcher_for(opts.bootstrap, opts.topic).position_all({s.partition: s.offset for s in starts})
    pipeline = beam.Pipeline(options=beam_options(opts, beam_args))
    build(pipeline, opts, starts, bounds, state)
    result = pipeline.run()
    result.wait_until_finish()
    report = PassReport(seconds=time.monotonic() - started)
    counters = {c.key.metric.name: c.committed or c.attempted for c in result.metrics().query()["counters"]
                if c.key.metric.namespace == NAMESPACE}
    report.records = int(counters.get("records", 0))
    report.bronze_rows = int(counters.get("bronze_rows", 0))
    report.reject_rows = int(counters.get("reject_rows", 0))
    report.files = int(counters.get("files", 0))
    report.dlq_failed = int(counters.get("dlq_failed", 0))
    report.busy_ms = {k: int(v) for k, v in counters.items() if k.endswith("_ms")}
    report.ended_by = {p: PASS_END.pop((pass_id, p), None) for p in range(partitions)}
    for p in range(partitions):
        _READERS.pop((pass_id, p), None)
    _QUIET.pop(pass_id, None)
    if report.records != report.bronze_rows + report.reject_rows:
        LOG.error("pass read %d records but wrote %d bronze + %d rejects", report.records,
                  report.bronze_rows, report.reject_rows)
    return report


def run_ingest(opts: IngestOptions, beam_args: Sequence[str] = (), progress=None) -> IngestReport:
    """Passes until drained (``until_idle``), stopped, or out of time (``max_seconds``)."""
    from lake.broker import partition_count, wait_until_reachable

    opts.validate()
    beam_options(opts, beam_args)  # bad Beam flags fail here, before any connection
    wait_until_reachable(opts.bootstrap, timeout=10)
    partitions = partition_count(opts.bootstrap, opts.topic)
    store = BronzeStore(opts.lake_root)
    report = IngestReport(recovered_files=store.recover())
    deadline = None if opts.max_seconds is None else time.monotonic() + opts.max_seconds
    STOP_REQUESTED.clear()
    if not opts.local and opts.until_idle is None:
        return _run_unbounded(opts, beam_args, store, partitions, report, deadline, progress)
    try:
        with validation_processes(opts.helper_processes):
            return _run_passes(opts, beam_args, store, partitions, report, deadline, progress)
    finally:
        close_consumers()


def _run_passes(opts: IngestOptions, beam_args: Sequence[str], store: BronzeStore, partitions: int,
                report: IngestReport, deadline: Optional[float], progress) -> IngestReport:
    """The local runner: pass after pass, each resuming from what Bronze holds."""
    lateness_ms = int(opts.allowed_lateness_seconds * 1000)
    quiet_seconds = 0.0  # how long consecutive passes read nothing: idleness outlives a pass
    while True:
        budget = opts.buffer_seconds if deadline is None else min(opts.buffer_seconds, deadline - time.monotonic())
        bounds = PassBounds(
            max_seconds=max(budget, 0.0), max_bytes=opts.buffer_bytes, poll_batch=opts.poll_batch,
            idle_seconds=opts.until_idle if opts.until_idle is not None else opts.idle_flush_seconds,
        )
        one = run_pass(opts, beam_args, store, partitions, bounds)
        quiet_seconds = quiet_seconds + one.seconds if one.records == 0 else 0.0
        # A pass shorter than the idle bound (--buffer-seconds <= --until-idle) always ends by
        # time first: the topic is drained when passes have read nothing for that long.
        drained = opts.until_idle is not None and (all(r == "idle" for r in one.ended_by.values())
                                                   or quiet_seconds >= opts.until_idle)
        one.closed_hours = store.close_hours(partitions, lateness_ms, drained=drained)
        report.passes.append(one)
        if progress is not None:
            progress(len(report.passes), one)
        if drained or STOP_REQUESTED.is_set() or (deadline is not None and time.monotonic() >= deadline):
            return report


def unbounded_pass(opts: IngestOptions, deadline: Optional[float]) -> PassBounds:
    """The bounds of a streaming runner's single pass: none but ``--max-seconds``."""
    budget = float("inf") if deadline is None else max(deadline - time.monotonic(), 0.0)
    return PassBounds(max_seconds=budget, max_bytes=sys.maxsize, poll_batch=opts.poll_batch, idle_seconds=None)


def _run_unbounded(opts: IngestOptions, beam_args: Sequence[str], store: BronzeStore, partitions: int,
                   report: IngestReport, deadline: Optional[float], progress) -> IngestReport:
    """Flink/Dataflow: one streaming pipeline that runs until cancelled (or ``--max-seconds``).

    Its buffer is WriteBronze's trigger and it closes hours itself by
    watermark, so nothing needs a pass boundary; a restart resumes from what
    Bronze holds, as a local pass does.
    """
    one = run_pass(opts, beam_args, store, partitions, unbounded_pass(opts, deadline))
    report.passes.append(one)
    if progress is not None:
        progress(1, one)
    return report


def install_stop_handlers() -> None:
    """First Ctrl-C (or SIGTERM): finish the pass in flight, then stop. Second: abort."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        print("lake ingest: stopping after the pass in flight (Ctrl-C again to abort)", file=sys.stderr)
        STOP_REQUESTED.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(argv: Optional[Sequence[str]] = None) -> IngestReport:
    """Entry point for ``python -m beam_pipelines.ingest.pipeline`` and the DAGs."""
    from lake.settings import Settings

    from .options import parse

    opts, beam_args = parse(argv, Settings.resolve())
    install_stop_handlers()
    return run_ingest(opts, beam_args)


if __name__ == "__main__":
    run(sys.argv[1:])
