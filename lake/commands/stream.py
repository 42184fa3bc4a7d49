"""``lake stream``: the hot path, Kafka -> live state, windows and alerts in PostgreSQL (contract section 9)."""

from __future__ import annotations

import sys
import threading
import time

from beam_pipelines.stream.options import add_stream_flags, options_from_args
from beam_pipelines.stream.workers import stream_with_workers
from lake.observability.stream_metrics import StreamMetrics
from lake_core.processes import install_stop_handlers
from lake_core.services import announced


def register(sub, common) -> None:
    p = sub.add_parser(
        "stream",
        parents=[common],
        help="keep live vehicle state, 1-/5-minute windows and alerts in PostgreSQL (Beam)",
        description="Stream the telemetry topic into the hot store (PostgreSQL schema hot, env LAKE_HOT_DSN) "
        "and publish alerts to vehicle-alerts. Unknown flags are Beam pipeline options "
        "(e.g. --runner=FlinkRunner --flink_master=...).",
    )
    add_stream_flags(p)
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (records, commits, alerts, latency, lag) on this port",
    )
    p.add_argument("--metrics-host", default="127.0.0.1", help="interface of --metrics-port (default 127.0.0.1)")
    p.set_defaults(func=run, allow_beam_args=True)


def run(args, settings) -> int:
    opts = options_from_args(args, settings)
    if opts.local and opts.workers > 1 and opts.worker is None:
        # The workers import Beam, each on its core; this process only starts them and sends the alerts.
        run_stream = stream_with_workers
    else:
        from beam_pipelines.stream.pipeline import run_stream  # noqa: PLC0415 - Beam, for this path only
    stop = threading.Event()
    install_stop_handlers(stop, "lake stream")
    hooks = [] if not opts.progress else [_print_pass]
    if args.metrics_port is not None:
        metrics = StreamMetrics(opts.dsn, opts.bootstrap, opts.topic)
        metrics.serve(args.metrics_port, args.metrics_host)
        hooks.append(metrics.pass_done)

    def progress(number: int, one) -> None:
        for hook in hooks:
            hook(number, one)

    metrics_url = None if args.metrics_port is None else f"http://{args.metrics_host}:{args.metrics_port}/metrics"
    started = time.monotonic()
    with announced(settings.lake_root, "stream", f"{opts.topic} -> hot store", metrics_url):
        report = run_stream(opts, getattr(args, "beam_args", []), progress=progress if hooks else None, stop=stop)
    records = report.total("records")
    seconds = time.monotonic() - started  # wall time: with --workers, passes run side by side
    print(
        f"streamed {records:,} records in {len(report.passes)} pass(es), {report.total('commits'):,.0f} commits, "
        f"{report.total('alert_events'):,.0f} alert events ({report.published:,} published to {opts.alerts_topic}), "
        f"{records / seconds if seconds else 0:,.0f} records/s; PostgreSQL waits: {report.total('pg_waits'):.0f}"
    )
    return 0


def _print_pass(number: int, one) -> None:
    ended = sorted({r for r in one.ended_by.values() if r})
    print(
        f"pass {number}: {one.records:,} records, {one.commits:,} commits, {one.alert_events:,} alert events "
        f"in {one.seconds:.1f}s (ended by {'/'.join(ended) or 'nothing'}); PostgreSQL waits {one.pg_waits}",
        file=sys.stderr,
    )
