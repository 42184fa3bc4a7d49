"""The streaming ingest pipeline: Kafka -> Bronze, run pass after pass.

    PartitionStarts | ReadKafkaPartitions | ValidateTelemetry | WriteBronze

Locally (FnApiRunner) a run is one pass: bounded by the buffer (time, bytes)
or idleness, its files are written when it ends, and the next pass resumes
from what Bronze holds. On Flink/Dataflow the same transforms run as one
unbounded pipeline whose buffer is a trigger; with ``--until-idle`` they run
there too as bounded passes (batch pipelines), each submitted to the runner
in turn, as locally (``IngestOptions.unbounded``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import runner_fixes  # noqa: F401 - the local runner's metrics past 900 bundles
from beam_pipelines.batch import lake_errors_from_workers
from beam_pipelines.ingest.bronze_state import BronzeState, BronzeStore
from beam_pipelines.ingest.bronze_writer import NAMESPACE, DeadLetterUndelivered, WriteBronze
from beam_pipelines.ingest.kafka_source import (
    PartitionStart,
    PassBounds,
    ReadKafkaCrossLanguage,
    ReadKafkaPartitions,
    close_consumers,
)
from beam_pipelines.ingest.options import IngestOptions, parse
from beam_pipelines.ingest.partition_fetcher import fetcher_for
from beam_pipelines.ingest.pass_control import PassControl, ended_by_counters
from beam_pipelines.ingest.positions import OffsetsWentBackwards, backwards_message, check_positions
from beam_pipelines.ingest.validate import ValidateTelemetry
from beam_pipelines.ingest.validation_processes import validation_processes
from lake_core.errors import ConfigError
from lake_core.kafka_admin import partition_count, wait_until_reachable
from lake_core.lease import Lease, LeaseLost
from lake_core.processes import install_stop_handlers
from lake_core.settings import Settings
from lake_schemas.paths import hour_of_ms

LOG = logging.getLogger(__name__)

#: ``progress(pass number, its report)``, called after each pass.
Progress = Callable[[int, "PassReport"], None]


@dataclass
class PassReport:
    records: int = 0
    bronze_rows: int = 0
    reject_rows: int = 0
    files: int = 0
    seconds: float = 0.0
    ended_by: dict = field(default_factory=dict)
    busy_ms: dict = field(default_factory=dict)  # time spent polling, validating, committing
    counters: dict = field(default_factory=dict)  # every Beam counter of the pass (lake.ingest), by name
    closed_hours: list = field(default_factory=list)


@dataclass
class IngestReport:
    passes: list = field(default_factory=list)
    recovered_files: list = field(default_factory=list)

    def total(self, attr: str) -> float:
        return sum(getattr(p, attr) for p in self.passes)


def build(
    pipeline: beam.Pipeline,
    opts: IngestOptions,
    starts: list,
    bounds: PassBounds,
    state: BronzeState,
    control: Optional[PassControl] = None,
) -> None:
    """Wire the pipeline: the architecture picture, in code."""
    streaming = opts.unbounded
    if opts.kafka_source == "xlang":
        batches = pipeline | "ReadKafkaCrossLanguage" >> ReadKafkaCrossLanguage(
            opts.bootstrap, opts.topic, opts.poll_batch
        )
    else:
        batches = (
            pipeline
            # Reshuffled on a distributed runner, so partitions spread over its workers; the
            # local runner has one worker, and the reshuffle costs it two stages a pass.
            | "PartitionStarts" >> beam.Create(starts, reshuffle=streaming)
            | "ReadKafkaPartitions" >> ReadKafkaPartitions(opts.bootstrap, bounds, control)
        )
    (
        batches
        | "ValidateTelemetry" >> ValidateTelemetry()
        | "WriteBronze"
        >> WriteBronze(
            opts.lake_root,
            opts.bootstrap,
            opts.topic,
            opts.dlq_topic,
            state.open_from_ms,
            state.watermarks,
            streaming_buffer_seconds=opts.buffer_seconds if streaming else None,
            close_hours=(len(starts), int(opts.allowed_lateness_seconds * 1000)) if streaming else None,
        )
    )


def _check_beam_args(args: list, local: bool) -> None:
    """Refuse, in one line, what Beam would drop with a warning (an unknown
    flag), print pages of usage for (a bad value), or run wrongly (workers)."""
    from apache_beam.options.pipeline_options import DirectOptions

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
        raise ConfigError(
            f"unrecognized arguments: {' '.join(flags)} (neither an ingest flag nor a Beam "
            "pipeline option; see `lake ingest --help`)"
        )
    if local and workers != 1:
        raise ConfigError(
            "--direct_num_workers must be 1: FnApiRunner with more workers drops "
            "deferred splittable-DoFn work (measured: half the rows lost)"
        )


def beam_options(opts: IngestOptions, beam_args: Sequence[str]) -> PipelineOptions:
    args = list(beam_args)
    _check_beam_args(args, opts.local)
    if opts.local:
        args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    elif opts.unbounded:
        args += ["--streaming"]
    return PipelineOptions([f"--runner={opts.runner}", *args])


def run_pass(
    opts: IngestOptions,
    beam_args: Sequence[str],
    store: BronzeStore,
    partitions: int,
    bounds: PassBounds,
    stop: threading.Event,
) -> PassReport:
    """One pass; ``stop`` (the run's) ends it early, with what it read committed."""
    state = store.state(partitions)
    control = PassControl(uuid.uuid4().hex, stop=stop)
    starts = [PartitionStart(opts.topic, p, state.next_offsets[p]) for p in range(partitions)]
    started = time.monotonic()
    if opts.local and opts.kafka_source == "native":  # the readers run in this process: assign them all at once
        fetcher_for(opts.bootstrap, opts.topic).position_all({s.partition: s.offset for s in starts})
    pipeline = beam.Pipeline(options=beam_options(opts, beam_args))
    build(pipeline, opts, starts, bounds, state, control)
    try:
        with lake_errors_from_workers():  # DeadLetterUndelivered (retried below) from a worker elsewhere too
            result = pipeline.run()
            result.wait_until_finish()
    finally:
        control.close()
    report = PassReport(seconds=time.monotonic() - started)
    counters = {
        c.key.metric.name: c.committed or c.attempted
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == NAMESPACE
    }
    report.records = int(counters.get("records", 0))
    report.bronze_rows = int(counters.get("bronze_rows", 0))
    report.reject_rows = int(counters.get("reject_rows", 0))
    report.files = int(counters.get("files", 0))
    report.busy_ms = {k: int(v) for k, v in counters.items() if k.endswith("_ms")}
    report.counters = {k: int(v) for k, v in counters.items()}
    remote = ended_by_counters(counters)  # readers in other processes (PortableRunner, Flink) say it this way
    report.ended_by = {p: control.ended_by.get(p) or remote.get(p) for p in range(partitions)}
    if report.records != report.bronze_rows + report.reject_rows:
        LOG.error(
            "pass read %d records but wrote %d bronze + %d rejects",
            report.records,
            report.bronze_rows,
            report.reject_rows,
        )
    return report


def run_ingest(
    opts: IngestOptions,
    beam_args: Sequence[str] = (),
    progress: Optional[Progress] = None,
    stop: Optional[threading.Event] = None,
) -> IngestReport:
    """Passes until drained (``until_idle``), stopped (``stop`` set), or out of time (``max_seconds``).

    The run holds the lake's ingest lease for its topic throughout (``lake_core.lease``): a second
    ingest of the same lake and topic exits 3 naming this one, before it touches anything.
    """
    beam_options(opts, beam_args)  # bad Beam flags fail here, before any connection
    wait_until_reachable(opts.bootstrap, timeout=10)
    partitions = partition_count(opts.bootstrap, opts.topic)
    stop = stop or threading.Event()
    lost: list[LeaseLost] = []

    def on_lost(exc: LeaseLost) -> None:
        lost.append(exc)
        stop.set()  # the pass in flight ends; nothing after it is written

    with Lease(opts.lake_root, f"ingest-{opts.topic}", f"ingest of {opts.topic}") as lease, lease.renewing(on_lost):
        if lease.previous is not None:
            LOG.warning("took over the ingest lease of %s", lease.previous.describe())
        store = BronzeStore(opts.lake_root)
        report = IngestReport(recovered_files=store.recover())
        _check_offsets(opts, store, partitions)
        deadline = None if opts.max_seconds is None else time.monotonic() + opts.max_seconds
        run = _Run(opts, beam_args, store, partitions, report, deadline, progress, stop)
        try:
            if opts.unbounded:
                return _run_unbounded(run)
            with validation_processes(opts.helper_processes):
                return _run_passes(run)
        finally:
            close_consumers()
            if lost:
                raise lost[0]


def _check_offsets(opts: IngestOptions, store: BronzeStore, partitions: int) -> None:
    """Offsets that went backwards stop the run (exit 3) unless a new generation starts; gaps are recorded."""
    if opts.new_generation:
        generation = store.start_generation(partitions, "lake ingest --new-generation")
        print(
            f"lake ingest: started Bronze generation {generation}: {opts.topic} is read from its start; "
            f"the files of earlier generations stay as they are",
            file=sys.stderr,
        )
    state = store.state(partitions)
    checks = check_positions(opts.bootstrap, opts.topic, store, state)
    backwards = [c for c in checks if c.verdict == "backwards"]
    if backwards:
        raise OffsetsWentBackwards(backwards_message(backwards, opts.topic))
    hour = state.open_from_ms or max(state.open_hours, default=None) or hour_of_ms(int(time.time() * 1000))
    for gap in (c for c in checks if c.verdict == "gap"):
        store.record_gap(state.generation, opts.topic, gap.partition, gap.resume, gap.earliest - 1, hour)
        print(
            f"lake ingest: partition {gap.partition}: {gap.detail} were deleted by the broker (retention) before "
            f"they were ingested; recorded as a gap in _ledger/gaps, reading on from offset {gap.earliest}",
            file=sys.stderr,
        )


@dataclass
class _Run:
    """One ``run_ingest``: what its passes share."""

    opts: IngestOptions
    beam_args: Sequence[str]
    store: BronzeStore
    partitions: int
    report: IngestReport
    deadline: Optional[float]
    progress: Optional[Progress]
    stop: threading.Event


#: A pass whose rejects the DLQ did not confirm is run again this many times, after these pauses.
PASS_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0)


def _pass_with_retries(run: _Run, bounds: PassBounds) -> PassReport:
    """``run_pass``; one that failed before committing a partition's rejects (``DeadLetterUndelivered``:
    the DLQ did not confirm them) is run again from what Bronze holds, then the ingest gives up."""
    for attempt, delay in enumerate((*PASS_RETRY_DELAYS_S, None), start=1):
        try:
            return run_pass(run.opts, run.beam_args, run.store, run.partitions, bounds, run.stop)
        except DeadLetterUndelivered as exc:
            if delay is None or run.stop.is_set():
                raise
            LOG.warning("pass failed (%s); attempt %d again in %.0f s", exc, attempt + 1, delay)
            print(f"lake ingest: {exc}; retrying in {delay:.0f} s", file=sys.stderr)
            time.sleep(delay)
            run.report.recovered_files += run.store.recover()
    raise AssertionError("unreachable")


def _run_passes(run: _Run) -> IngestReport:
    """Bounded runs (the local runner; any runner with ``--until-idle``): pass after pass, each resuming
    from what Bronze holds."""
    opts, store, partitions, report, deadline = run.opts, run.store, run.partitions, run.report, run.deadline
    lateness_ms = int(opts.allowed_lateness_seconds * 1000)
    quiet_seconds = 0.0  # how long consecutive passes read nothing: idleness outlives a pass
    while True:
        budget = opts.buffer_seconds if deadline is None else min(opts.buffer_seconds, deadline - time.monotonic())
        bounds = PassBounds(
            max_seconds=max(budget, 0.0),
            max_bytes=opts.buffer_bytes,
            poll_batch=opts.poll_batch,
            idle_seconds=opts.until_idle if opts.until_idle is not None else opts.idle_flush_seconds,
        )
        one = _pass_with_retries(run, bounds)
        quiet_seconds = quiet_seconds + one.seconds if one.records == 0 else 0.0
        # A pass shorter than the idle bound (--buffer-seconds <= --until-idle) always ends by
        # time first: the topic is drained when passes have read nothing for that long.
        drained = opts.until_idle is not None and (
            all(r == "idle" for r in one.ended_by.values()) or quiet_seconds >= opts.until_idle
        )
        clock = None if opts.close_open_hours else int(time.time() * 1000)
        one.closed_hours = store.close_hours(partitions, lateness_ms, drained=drained, now_ms=clock)
        report.passes.append(one)
        if run.progress is not None:
            run.progress(len(report.passes), one)
        if drained or run.stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            return report


def unbounded_pass(opts: IngestOptions, deadline: Optional[float]) -> PassBounds:
    """The bounds of a streaming runner's single pass: none but ``--max-seconds``."""
    budget = float("inf") if deadline is None else max(deadline - time.monotonic(), 0.0)
    return PassBounds(max_seconds=budget, max_bytes=sys.maxsize, poll_batch=opts.poll_batch, idle_seconds=None)


def _run_unbounded(run: _Run) -> IngestReport:
    """Flink/Dataflow: one streaming pipeline that runs until cancelled (or ``--max-seconds``).

    Its buffer is WriteBronze's trigger and it closes hours itself by
    watermark, so nothing needs a pass boundary; a restart resumes from what
    Bronze holds, as a local pass does.
    """
    bounds = unbounded_pass(run.opts, run.deadline)
    one = run_pass(run.opts, run.beam_args, run.store, run.partitions, bounds, run.stop)
    run.report.passes.append(one)
    if run.progress is not None:
        run.progress(1, one)
    return run.report


def run(argv: Optional[Sequence[str]] = None) -> IngestReport:
    """Entry point for ``python -m beam_pipelines.ingest.pipeline`` and the DAGs."""
    opts, beam_args = parse(argv, Settings.resolve())
    stop = threading.Event()
    install_stop_handlers(stop)
    return run_ingest(opts, beam_args, stop=stop)


if __name__ == "__main__":
    run(sys.argv[1:])
