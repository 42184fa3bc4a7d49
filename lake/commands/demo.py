"""``lake demo``: the lake end to end on the embedded defaults.

Starts the embedded broker, simulates 200 vehicles for 2 simulated hours,
streams them into Bronze with the Beam pipeline, and shows what landed.
"""
from __future__ import annotations

import sys
import time


def register(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the whole lake end to end on the embedded defaults")
    p.add_argument("--vehicles", type=int, default=200, help="fleet size (default 200)")
    p.add_argument("--duration", default="2h", help="simulated time (default 2h)")
    p.add_argument("--shape", choices=["snapshot", "signal", "mixed"], default="mixed",
                   help="message shape (default mixed: some vehicles send snapshots, some fragmented signals)")
    p.add_argument("--port", type=int, default=9092, help="embedded broker port (default 9092)")
    p.set_defaults(func=run)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(args, settings) -> int:
    import os

    from edge_client.config import Imperfections, SimulationConfig, parse_duration
    from edge_client.registry import register_fleet
    from edge_client.senders import KafkaSender
    from edge_client.simulate import simulate

    from .. import broker
    from ..settings import Settings
    from .ingest import _print_pass

    started = time.monotonic()
    print(f"lake root: {settings.lake_root}")
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not args.bootstrap:
        _step("embedded Kafka-protocol broker (Tansu)")
        info = broker.start_broker(settings.lake_root, args.port, topics=[settings.topic, settings.dlq_topic])
        settings = Settings(settings.lake_root, info.bootstrap, settings.topic, settings.dlq_topic)
        print(f"broker at {info.bootstrap} (log {info.log})")
    else:
        broker.ensure_topics(settings.bootstrap, [settings.topic, settings.dlq_topic])

    _step(f"simulating {args.vehicles} vehicles for {args.duration} ({args.shape} shape) -> {settings.topic}")
    config = SimulationConfig(vehicles=args.vehicles, duration_s=parse_duration(args.duration), shape=args.shape,
                              seed=42, imperfections=Imperfections(bad_rate=0.001))
    sender = KafkaSender(settings.bootstrap, settings.topic)
    register_fleet(settings.lake_root, config)
    stats = simulate(config, sender, progress=sys.stderr.isatty())
    sender.close()
    print(stats.summary())

    _step("streaming ingest (Beam, FnApiRunner): Kafka -> Bronze, until the topic is drained")
    from beam_pipelines.ingest.options import IngestOptions
    from beam_pipelines.ingest.pipeline import run_ingest

    opts = IngestOptions(lake_root=settings.lake_root, bootstrap=settings.bootstrap, topic=settings.topic,
                         dlq_topic=settings.dlq_topic, until_idle=1.0)
    report = run_ingest(opts, progress=_print_pass)
    print(f"ingested {report.total('records'):,} records: {report.total('bronze_rows'):,} bronze, "
          f"{report.total('reject_rows'):,} rejects")

    _step("what landed in Bronze")
    from beam_pipelines.ingest.bronze_state import BronzeStore

    store = BronzeStore(settings.lake_root)
    files = store.files()
    for table in store.tables:
        print(f"{table}: {sum(1 for f in files if f.table == table)} Parquet files under "
              f"{getattr(store.paths, 'bronze' if table == 'bronze_telemetry' else 'rejects')}")
    print(f"complete hours (_COMPLETE written): {len(store.complete_hours())}")
    _show(settings.lake_root, "rows per hour (Kafka record time, UTC)",
          "SELECT year, month, day, hour, count(*) AS rows, count(DISTINCT vehicle_id) AS vehicles, "
          "min(kafka_offset) AS min_offset, max(kafka_offset) AS max_offset FROM bronze_telemetry "
          "GROUP BY ALL ORDER BY ALL")
    _show(settings.lake_root, "rejects by reason",
          "SELECT reason, count(*) AS rows FROM bronze_rejects GROUP BY 1 ORDER BY 2 DESC")
    print(f"\ndone in {time.monotonic() - started:.0f}s. Try:\n"
          f"  lake query --lake-root {settings.lake_root} \"SELECT vehicle_id, count(*) FROM bronze_telemetry "
          "GROUP BY 1 ORDER BY 2 DESC LIMIT 5\"\n"
          f"  lake broker stop --lake-root {settings.lake_root}")
    return 0


def _show(lake_root: str, title: str, sql: str) -> None:
    from ..errors import LakeError
    from ..query import query
    from .query import format_table

    print(f"\n{title}:")
    try:
        print(format_table(query(sql, lake_root)))
    except LakeError as exc:
        print(f"  ({exc})")
