"""``lake ingest``: the Beam streaming pipeline Kafka -> Bronze."""

from __future__ import annotations

import sys
import threading

from beam_pipelines.ingest.options import add_ingest_flags, options_from_args
from beam_pipelines.ingest.validation_processes import validation_processes
from lake_core.kafka_admin import partition_count


def register(sub, common) -> None:
    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="stream Kafka into Bronze Parquet (Beam)",
        description="Stream the telemetry topic into Bronze. Unknown flags are Beam pipeline "
        "options (e.g. --runner=FlinkRunner --flink_master=...).",
    )
    add_ingest_flags(p)
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (records, rejects by reason, lag per partition, passes...) on this port",
    )
    p.add_argument("--metrics-host", default="127.0.0.1", help="interface of --metrics-port (default 127.0.0.1)")
    p.set_defaults(func=run, allow_beam_args=True)


def run(args, settings) -> int:
    opts = options_from_args(args, settings)
    # Started before Beam is imported: the helpers' own imports overlap Beam's two seconds.
    with validation_processes(opts.helper_processes):
        return _run(opts, args)


def _run(opts, args) -> int:
    from beam_pipelines.ingest.pipeline import install_stop_handlers, run_ingest
    from lake.observability.ingest_metrics import IngestMetrics  # noqa: PLC0415 - imports Beam, as the line above

    stop = threading.Event()
    install_stop_handlers(stop)
    hooks = [] if not opts.progress else [_print_pass]
    if args.metrics_port is not None:
        metrics = IngestMetrics(opts.lake_root, opts.bootstrap, opts.topic)
        metrics.refresh_state(partition_count(opts.bootstrap, opts.topic))
        metrics.serve(args.metrics_port, args.metrics_host)
        hooks.append(metrics.pass_done)

    def progress(number: int, one) -> None:
        for hook in hooks:
            hook(number, one)

    report = run_ingest(opts, getattr(args, "beam_args", []), progress=progress if hooks else None, stop=stop)
    if report.recovered_files:
        print(
            f"recovered: deleted {len(report.recovered_files)} half-committed file(s) of a killed pass; "
            "their offsets were read again",
            file=sys.stderr,
        )
    records = report.total("records")
    seconds = report.total("seconds")
    print(
        f"ingested {records:,} records in {len(report.passes)} pass(es): {report.total('bronze_rows'):,} bronze, "
        f"{report.total('reject_rows'):,} rejects, {report.total('files')} files, "
        f"{records / seconds if seconds else 0:,.0f} records/s"
    )
    return 0


def _print_pass(number: int, one) -> None:
    ended = sorted({r for r in one.ended_by.values() if r})
    closed = ", ".join(_hour(h) for h in one.closed_hours) or "none"
    print(
        f"pass {number}: {one.records:,} records -> {one.bronze_rows:,} bronze + {one.reject_rows:,} rejects, "
        f"{one.files} files in {one.seconds:.1f}s (ended by {'/'.join(ended) or 'nothing'}); hours closed: {closed}",
        file=sys.stderr,
    )


def _hour(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H")
