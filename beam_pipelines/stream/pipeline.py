"""The hot path: Kafka -> live state, windows and alerts in PostgreSQL (contract section 9).

    PartitionStarts | ReadKafkaPartitions | KeyByPartition | UpdateHotStore
    (+ one empty batch per partition at the start of a pass: the clock's first tick)

It reuses the ingest's Kafka source (its own position in the topic: the
offsets the hot store holds) and the contract's validation and Silver rules
from ``lake_schemas``. Outputs and offsets commit per batch, in one
transaction; the alert outbox is sent to ``vehicle-alerts`` by the
``AlertPublisher`` thread of this process.

Locally (FnApiRunner) a run is a sequence of passes (``--pass-seconds``);
each partition's state is saved with its offset when a pass ends and loaded
by the next. On Flink/Dataflow the same transforms run unbounded with the
runner's state and checkpoints.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from typing import Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import runner_fixes  # noqa: F401 - the local runner's metrics past 900 bundles
from beam_pipelines.ingest.batches import KafkaBatch
from beam_pipelines.ingest.kafka_source import PartitionStart, PassBounds, ReadKafkaPartitions, close_consumers
from beam_pipelines.ingest.partition_fetcher import fetcher_for
from beam_pipelines.ingest.pass_control import PassControl
from beam_pipelines.ingest.pipeline import _check_beam_args
from beam_pipelines.stream.options import StreamOptions, parse
from beam_pipelines.stream.publisher import AlertPublisher
from beam_pipelines.stream.report import Progress, StreamPass, StreamReport
from beam_pipelines.stream.store import PG_WAITS, HotCommitter, hold_stream_lock, prepare_store, start_offsets
from beam_pipelines.stream.transforms import NAMESPACE, StateHandoff, UpdateHotStore
from beam_pipelines.stream.workers import report_pass, run_workers
from lake_core import hot_store as hs
from lake_core.errors import LakeError
from lake_core.kafka_admin import partition_count, wait_until_reachable
from lake_core.processes import collect_garbage_less
from lake_core.processes import install_stop_handlers as stop_handlers
from lake_core.settings import Settings

LOG = logging.getLogger(__name__)


def build(
    pipeline: beam.Pipeline,
    opts: StreamOptions,
    starts: list,
    bounds: PassBounds,
    control: Optional[PassControl] = None,
    handoff: Optional[StateHandoff] = None,
) -> None:
    """Wire the pipeline: the architecture picture, in code."""
    streaming = not opts.local
    batches = (
        pipeline
        | "PartitionStarts" >> beam.Create(starts, reshuffle=streaming)
        | "ReadKafkaPartitions" >> ReadKafkaPartitions(opts.bootstrap, bounds, control)
    )
    if streaming:
        # One empty batch per partition at the start: every partition's key gets its clock (the timer
        # re-arms itself there), even one that never receives a record. Not on the local runner: a
        # Flatten there makes the stateful stage wait for the whole pass (measured: no commit until
        # the pass ended); the driver ticks the partitions a pass left idle instead (``_tick_idle``).
        first_ticks = pipeline | "FirstTicks" >> beam.Create(
            [KafkaBatch(s.topic, s.partition, [], [], [], []) for s in starts], reshuffle=False
        )
        batches = (batches, first_ticks) | "Together" >> beam.Flatten()
    (
        batches
        | "KeyByPartition" >> beam.Map(lambda b: (b.partition, b)).with_output_types(Tuple[int, KafkaBatch])
        | "UpdateHotStore"
        >> UpdateHotStore(
            opts.dsn,
            opts.topic,
            opts.area(),
            opts.rules,
            following=opts.following,
            snapshot_seconds=opts.snapshot_seconds,
            commit_seconds=opts.commit_seconds,
            handoff=handoff,
            streaming_runner=streaming,
        )
    )


def beam_options(opts: StreamOptions, beam_args: Sequence[str]) -> PipelineOptions:
    args = list(beam_args)
    _check_beam_args(args, opts.local)
    if opts.local:
        args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    else:
        args += ["--streaming"]
    return PipelineOptions([f"--runner={opts.runner}", *args])


def run_pass(
    opts: StreamOptions, beam_args: Sequence[str], partitions: list, bounds: PassBounds, stop: threading.Event
) -> StreamPass:
    """One pass over ``partitions`` (this process's: all of them, or a worker's share)."""
    offsets = start_offsets(opts.dsn, opts.topic, max(partitions) + 1)
    starts = [PartitionStart(opts.topic, p, offsets[p]) for p in partitions]
    control = PassControl(uuid.uuid4().hex, stop=stop)
    handoff = StateHandoff(uuid.uuid4().hex)
    started = time.monotonic()
    waits_before = PG_WAITS["count"]
    if opts.local:
        fetcher_for(opts.bootstrap, opts.topic).position_all({s.partition: s.offset for s in starts})
    pipeline = beam.Pipeline(options=beam_options(opts, beam_args))
    build(pipeline, opts, starts, bounds, control, handoff)
    try:
        result = pipeline.run()
        result.wait_until_finish()
        saved_events = _save_states(opts, handoff, partitions)
    finally:
        control.close()
        handoff.close()
    one = StreamPass(seconds=time.monotonic() - started, pg_waits=int(PG_WAITS["count"] - waits_before))
    counters = {
        c.key.metric.name: c.committed or c.attempted
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == NAMESPACE
    }
    one.records = int(counters.get("records", 0))
    one.commits = int(counters.get("commits", 0))
    one.alert_events = int(counters.get("alert_events", 0)) + saved_events
    one.busy_ms = {k: int(v) for k, v in counters.items() if k.endswith("_ms")}
    one.ended_by = {p: control.ended_by.get(p) for p in partitions}
    return one


def _save_states(opts: StreamOptions, handoff: StateHandoff, partitions: list) -> int:
    """The pass is over: save each partition's state with its offset, for the next pass; while
    following, give the partitions that received nothing their look at the clock (``offline``).
    Returns the alert events committed here (the pass's counters, counted in the DoFn, lack them)."""
    committer = HotCommitter(opts.dsn, opts.topic)
    events = 0
    try:
        for ps, committed in handoff.states.values():
            if ps.replay_until is None:  # what the commit interval held back, with the state, in one transaction
                counts = dict(ps.counts)
                ps.counts.clear()
                drained = ps.drain()
                committer.commit(ps, drained, committed, counts, snapshot=True)
                events += len(drained.events)
        if opts.following:
            for partition in sorted(set(partitions) - set(handoff.states)):
                events += _tick_idle(committer, partition, opts)
    finally:
        committer.close()
    return events


def _tick_idle(committer: HotCommitter, partition: int, opts: StreamOptions) -> int:
    """What the DoFn does on a tick, for a partition without records this pass: load, tick, commit with
    state; the alert events committed."""
    ps, committed = committer.load(partition, opts.rules)
    if ps.next_offset != committed or not ps.vehicles:
        return 0  # the saved state is behind its outputs (a kill): the next pass's replay brings it up to date
    if not ps.tick(int(time.time() * 1000)):
        return 0
    counts = dict(ps.counts)
    ps.counts.clear()
    drained = ps.drain()
    committer.commit(ps, drained, committed, counts, snapshot=True)
    return len(drained.events)


def run_stream(
    opts: StreamOptions,
    beam_args: Sequence[str] = (),
    progress: Optional[Progress] = None,
    stop: Optional[threading.Event] = None,
) -> StreamReport:
    """Passes until drained (``until_idle``), stopped (``stop`` set) or out of time (``max_seconds``)."""
    beam_options(opts, beam_args)  # bad Beam flags fail here, before any connection
    wait_until_reachable(opts.bootstrap, timeout=10)
    count = partition_count(opts.bootstrap, opts.topic)
    if opts.local and opts.workers > 1 and opts.worker is None:
        return run_workers(opts, beam_args, count, progress, stop)
    partitions = opts.my_partitions(count)
    collect_garbage_less()
    if not partitions:
        return StreamReport()  # a worker beyond the topic's partitions: nothing to stream
    prepare_store(opts.dsn, opts.topic, count)
    lock = hold_stream_lock(opts.dsn, opts.topic, partitions=None if opts.worker is None else partitions)
    stop = stop or threading.Event()
    report = StreamReport()
    # A worker's alert events are sent by the process that started it (one ordered alerts topic).
    publisher = None if opts.worker else AlertPublisher(opts.dsn, opts.bootstrap, opts.alerts_topic, opts.webhook)
    if publisher is not None:
        publisher.start()
    deadline = None if opts.max_seconds is None else time.monotonic() + opts.max_seconds
    try:
        if not opts.local:
            bounds = PassBounds(
                max_seconds=float("inf") if deadline is None else opts.max_seconds or 0.0,
                max_bytes=sys.maxsize,
                poll_batch=opts.poll_batch,
                idle_seconds=opts.until_idle,
            )
            report.passes.append(run_pass(opts, beam_args, partitions, bounds, stop))
            return report
        while True:
            budget = opts.pass_seconds if deadline is None else min(opts.pass_seconds, deadline - time.monotonic())
            bounds = PassBounds(
                max_seconds=max(budget, 0.0),
                max_bytes=sys.maxsize,
                poll_batch=opts.poll_batch,
                idle_seconds=opts.until_idle,
            )
            one = run_pass(opts, beam_args, partitions, bounds, stop)
            report.passes.append(one)
            if opts.worker is None or opts.worker_slot()[0] == 0:  # one process drops old days
                report.dropped_partitions += _retain(opts)
            if progress is not None:
                progress(len(report.passes), one)
            drained = opts.until_idle is not None and all(r == "idle" for r in one.ended_by.values())
            if drained or stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return report
    finally:
        close_consumers()
        if publisher is not None:
            publisher.stop(drain=True)
            report.published = publisher.published
            report.webhook_posted = publisher.webhook_posted
        lock.close()


def _retain(opts: StreamOptions) -> list[str]:
    """Drop the hot tables' days older than ``--hot-days`` before the newest event's day."""
    conn = hs.connect(opts.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT (extract(epoch FROM max(last_event_ts)) * 1000)::bigint "
                f"FROM {hs.HOT_SCHEMA}.live_vehicle_state"
            )
            newest = cur.fetchone()[0]
        conn.rollback()
    finally:
        conn.close()
    if newest is None:
        return []
    committer = HotCommitter(opts.dsn, opts.topic)
    try:
        return committer.retain(opts.hot_days, int(newest))
    finally:
        committer.close()


def install_stop_handlers(stop: threading.Event) -> None:
    """The ingest's two-step Ctrl-C, in the stream's words."""
    stop_handlers(stop, "lake stream")


def run(argv: Optional[Sequence[str]] = None) -> StreamReport:
    """Entry point for ``python -m beam_pipelines.stream.pipeline``, and through ``worker_main`` of the
    workers ``--workers`` starts."""
    opts, beam_args = parse(argv, Settings.resolve())
    stop = threading.Event()
    install_stop_handlers(stop)
    if opts.worker is None:
        return run_stream(opts, beam_args, stop=stop)
    try:  # a worker: started by ``beam_pipelines.stream.worker_main``, which watches its parent
        return run_stream(opts, beam_args, progress=report_pass, stop=stop)
    except LakeError as exc:  # one line for the parent's stderr, the exit code says which kind
        print(f"lake stream worker {opts.worker}: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    run(sys.argv[1:])
