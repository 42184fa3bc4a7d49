"""``lake demo``: the whole lake end to end on the embedded defaults.

Starts the embedded broker, simulates a fleet, streams it into Bronze with
the Beam pipeline, then runs the batch layers the way production does:
through Airflow's DAGs (``airflow dags test``: the hourly Bronze -> Silver
DAG for each closed hour, then the daily Silver -> Gold DAG), gates
included. The hot path (``lake stream``) runs over the same topic into a PostgreSQL
database of the demo's own (its alerts are copied into ``gold_alerts`` by the
daily DAG). Ends with a Gold summary, the alerts the stream raised per rule,
where the Data Docs are, and how to open the Airflow UI. ``--direct`` runs
the same jobs without Airflow.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import sys
import time

from beam_pipelines.gold.options import GoldOptions
from beam_pipelines.ingest.bronze_state import BronzeStore
from beam_pipelines.ingest.options import IngestOptions
from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.stream.options import StreamOptions
from edge_client.config import Imperfections, SimulationConfig, parse_duration
from edge_client.fleet_mqtt import FleetMqttSender
from edge_client.http_sender import HttpSender
from edge_client.offline_buffer import SpoolingSender
from edge_client.senders import KafkaSender
from edge_client.simulate import simulate
from lake.commands.ingest import _print_pass
from lake.commands.query import format_table
from lake.commands.simulate import device_keys_path, provision_fleet, register_fleet
from lake.commands.stream import _print_pass as _print_stream_pass
from lake.local import broker, edge_services
from lake.local.airflow.env import airflow_home
from lake.local.airflow.runs import dags_test, db_migrate
from lake.orchestration.run_log import read_record
from lake.query import query
from lake_core import hot_store, kafka_admin
from lake_core.errors import LakeError
from lake_core.processes import free_port, port_free
from lake_core.settings import Settings, env
from lake_core.storage import fs_path
from lake_schemas.hot import DEFAULT_HOT_DSN, AlertRule
from lake_schemas.paths import format_hour

GOLD_SUMMARY_SQL = (
    "SELECT vehicle_type, count(DISTINCT vehicle_id) AS vehicles, sum(event_count) AS events, "
    "round(sum(distance_km), 1) AS km, round(sum(usage_seconds) / 3600.0, 1) AS hours_in_use, "
    "round(avg(soc_avg), 1) AS avg_soc, sum(low_battery_events) AS low_battery_events "
    "FROM gold_vehicle_hourly WHERE event_date = DATE '{day}' GROUP BY vehicle_type ORDER BY km DESC"
)
#: Per vehicle and hour, the chance that it loses its uplink for minutes: a few go silent (``offline``).
DEMO_SILENCE_RATE = 0.03
ALERTS_SQL = (
    "SELECT rule, count(*) AS alerts, count(*) FILTER (WHERE resolved_at IS NULL) AS open_now, "
    "count(DISTINCT vehicle_id) AS vehicles, min(opened_at) AS first_opened, max(opened_at) AS last_opened "
    "FROM hot.alerts GROUP BY rule"
)


def register(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the whole lake end to end on the embedded defaults")
    p.add_argument(
        "--vehicles",
        type=int,
        help="fleet size (default 200; 50 with --edge mqtt|http, where every vehicle is a connection of its own)",
    )
    p.add_argument("--duration", default="2h", help="simulated time (default 2h)")
    p.add_argument(
        "--shape",
        choices=["snapshot", "signal", "mixed"],
        default="mixed",
        help="message shape (default mixed: some vehicles send snapshots, some fragmented signals)",
    )
    p.add_argument(
        "--port",
        type=int,
        help="embedded broker port (default 9092, or a free port when 9092 is taken, e.g. by another lake's demo)",
    )
    p.add_argument(
        "--edge",
        choices=["kafka", "mqtt", "http"],
        default="kafka",
        help="how the fleet's messages come in: straight into Kafka (default), through the project's Mosquitto "
        "and `lake bridge mqtt` (each vehicle logs in with its own credentials), or through `lake gateway`",
    )
    p.add_argument(
        "--direct", action="store_true", help="run the Silver and Gold jobs directly instead of through Airflow's DAGs"
    )
    p.set_defaults(func=run)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(args, settings) -> int:
    started = time.monotonic()
    if args.vehicles is None:
        args.vehicles = 200 if args.edge == "kafka" else 50
    print(f"lake root: {settings.lake_root}")
    settings, fresh_broker = _broker(args, settings)
    start_ms = _simulate(args, settings)
    # Through an edge, Kafka's record time is the arrival time (server-side, as in production): the
    # fleet's time ends now, and the hour it arrives in is closed once the topic is drained.
    hours = _ingest(settings, fresh_broker, close_open_hours=args.edge != "kafka")
    hot_dsn = _stream(settings)
    days = {_dt.datetime.fromtimestamp(h / 1000, _dt.timezone.utc).date() for h in hours}
    if args.edge != "kafka" and hours:  # the days the fleet's events fall on, not only the arrival hour's
        first = _dt.datetime.fromtimestamp(start_ms / 1000, _dt.timezone.utc).date()
        days |= {first + _dt.timedelta(days=n) for n in range((max(days) - first).days + 1)}
    days = sorted(days)
    if args.direct or not _airflow_installed():
        _batch_direct(settings.lake_root, hours, days)
    else:
        _batch_through_airflow(settings.lake_root, hours, days)
    _finish(settings, days, started, hot_dsn)
    return 0


def _broker(args, settings):
    if not env("KAFKA_BOOTSTRAP_SERVERS") and not args.bootstrap:
        _step("embedded Kafka-protocol broker (Tansu)")
        running = broker.running_broker(settings.lake_root)
        port = args.port or (running.port if running else broker_port(broker.DEFAULT_PORT))
        info = broker.start_broker(settings.lake_root, port, topics=[settings.topic, settings.dlq_topic])
        how = "reusing the broker this lake started" if running is not None else "started"
        print(f"broker at {info.bootstrap}, {how} (pid {info.pid}, log {info.log})")
        return Settings(settings.lake_root, info.bootstrap, settings.topic, settings.dlq_topic), running is None
    kafka_admin.ensure_topics(settings.bootstrap, [settings.topic, settings.dlq_topic])
    return settings, False


def broker_port(default: int) -> int:
    """``default`` when free, else a free port, said on stdout (a second lake's demo must not stop there)."""
    if port_free("127.0.0.1", default):
        return default
    port = free_port()
    print(f"port {default} is taken (another lake's broker?): using port {port}")
    return port


def _simulate(args, settings) -> int:
    """Send the demo fleet; return the simulated start (epoch ms)."""
    via = {"kafka": "", "mqtt": " via MQTT (Mosquitto + bridge)", "http": " via the HTTP gateway"}[args.edge]
    _step(f"simulating {args.vehicles} vehicles for {args.duration} ({args.shape} shape){via} -> {settings.topic}")
    duration_s = parse_duration(args.duration)
    config = SimulationConfig(
        vehicles=args.vehicles,
        duration_s=duration_s,
        shape=args.shape,
        seed=42,
        imperfections=Imperfections(bad_rate=0.001, silence_rate=DEMO_SILENCE_RATE),
    )
    if args.edge != "kafka":  # the edge stamps arrival time: a fleet whose clocks read now
        config = dataclasses.replace(config, start_ms=int((time.time() - duration_s) * 1000) // 1000 * 1000)
    register_fleet(settings.lake_root, config)
    if args.edge == "kafka":
        sender = KafkaSender(settings.bootstrap, settings.topic)
        stats = simulate(config, sender, progress=sys.stderr.isatty())
        sender.close()
        print(stats.summary())
        return config.start_ms
    keys, provisioned = provision_fleet(settings, config, device_keys_path(None, settings))
    if provisioned:
        print(f"{provisioned:,} device credentials created (`lake devices list`)")
    with edge_services.edge(args.edge, settings) as edge:
        print(f"{args.edge} edge at {edge.address} (log {edge.log})")
        if args.edge == "mqtt":
            host, port = edge.address.rsplit(":", 1)
            uplink = FleetMqttSender(host, int(port), keys)
        else:
            uplink = HttpSender(edge.address, keys)
        local = fs_path(settings.lake_root, settings.paths.local_state)
        spool = os.path.join(local, "spool", f"demo-{args.edge}.spool")
        os.makedirs(os.path.dirname(spool), exist_ok=True)
        sender = SpoolingSender(uplink, spool)  # what a vehicle runs: nothing lost if the edge hiccups
        stats = simulate(config, sender, progress=sys.stderr.isatty())
        sender.close()
        print(stats.summary())
        # The gateway refuses malformed lines itself (400, by reason); everything else reaches Kafka.
        expected = stats.messages - (sum(uplink.refused.values()) if isinstance(uplink, HttpSender) else 0)
        if isinstance(uplink, HttpSender):
            print(f"gateway: {uplink.summary()}")
        arrived = edge.wait_in_kafka(expected)
        print(f"in Kafka through the {args.edge} edge: {arrived:,} of {expected:,} records (telemetry + DLQ)")
        if arrived < expected:
            raise LakeError(f"only {arrived:,} of {expected:,} messages reached Kafka through the edge: see {edge.log}")
    return config.start_ms


def _ingest(settings, fresh_broker: bool, close_open_hours: bool = False) -> list:
    """Kafka -> Bronze until the topic is drained; return the closed hours (epoch ms), oldest first."""
    from beam_pipelines.ingest.pipeline import run_ingest

    _step("streaming ingest (Beam, FnApiRunner): Kafka -> Bronze, until the topic is drained")
    # The embedded broker keeps topics in memory: one started afresh for a lake that already holds Bronze
    # starts its offsets again, which the ingest refuses (exit 3) unless it starts a new generation.
    new_generation = fresh_broker and bool(BronzeStore(settings.lake_root).files())
    if new_generation:
        print(
            "the embedded broker was started afresh and this lake holds Bronze from an earlier one: "
            "ingesting into a new generation of Bronze files"
        )
    opts = IngestOptions(
        lake_root=settings.lake_root,
        bootstrap=settings.bootstrap,
        topic=settings.topic,
        dlq_topic=settings.dlq_topic,
        until_idle=1.0,
        close_open_hours=close_open_hours,
        new_generation=new_generation,
    )
    report = run_ingest(opts, progress=_print_pass)
    print(
        f"ingested {report.total('records'):,} records: {report.total('bronze_rows'):,} bronze, "
        f"{report.total('reject_rows'):,} rejects (by reason below)"
    )
    _show(settings.lake_root, None, "SELECT reason, count(*) AS rows FROM bronze_rejects GROUP BY 1 ORDER BY 2 DESC")
    return sorted(BronzeStore(settings.lake_root).complete_hours())


def demo_hot_dsn(lake_root: str) -> str:
    """The demo's own database on the hot store's server (``LAKE_HOT_DSN``'s, else the local one), one per
    lake root: the demo may empty it without touching a hot store that serves anything else."""
    from urllib.parse import urlsplit, urlunsplit

    name = "lake_demo_" + hashlib.sha1(os.path.abspath(lake_root).encode()).hexdigest()[:10]
    return urlunsplit(urlsplit(env("LAKE_HOT_DSN") or DEFAULT_HOT_DSN)._replace(path="/" + name))


def _stream(settings):
    """The hot path over the whole topic into the demo's database; its DSN, or None without PostgreSQL."""
    from beam_pipelines.stream.pipeline import run_stream

    dsn = demo_hot_dsn(settings.lake_root)
    _step(f"hot path (Beam, `lake stream`): live state, windows and alerts -> PostgreSQL {hot_store.redact(dsn)}")
    try:
        hot_store.ensure_database(dsn)
        conn = hot_store.connect(dsn)
        try:  # the demo's own database: emptied, so the stream replays the topic from its start
            with conn.cursor() as cur:
                cur.execute(f"DROP SCHEMA IF EXISTS {hot_store.HOT_SCHEMA} CASCADE")
            conn.commit()
        finally:
            conn.close()
        # A catch-up over the whole topic: one worker process per core (the rules are Python).
        workers = max(1, min(2, os.cpu_count() or 1))
        opts = StreamOptions(
            bootstrap=settings.bootstrap, topic=settings.topic, dsn=dsn, until_idle=1.0, workers=workers
        )
        report = run_stream(opts, progress=_print_stream_pass)  # a line per pass (60 s at most) on stderr
    except hot_store.HotStoreUnavailable as exc:
        print(f"hot path skipped: {exc}\n(set LAKE_HOT_DSN to a PostgreSQL server the demo may create a database on)")
        return None
    records, seconds = report.total("records"), report.total("seconds")
    print(
        f"streamed {records:,.0f} records in {seconds:.1f}s ({records / seconds if seconds else 0:,.0f}/s): "
        f"{report.total('alert_events'):,.0f} alert events, {report.published:,} published to {opts.alerts_topic}"
    )
    os.environ["LAKE_HOT_DSN"] = dsn  # the daily DAG copies these alerts into gold_alerts
    return dsn


def _show_alerts(dsn: str) -> None:
    """Alerts per rule, every rule named (a rule that never fired shows 0)."""
    import pyarrow as pa

    conn = hot_store.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(ALERTS_SQL)
            found = {row[0]: row for row in cur.fetchall()}
        conn.rollback()
    finally:
        conn.close()
    rows = [found.get(rule.value, (rule.value, 0, 0, 0, None, None)) for rule in AlertRule]
    names = ["rule", "alerts", "open_now", "vehicles", "first_opened", "last_opened"]
    print("\nalerts the hot path raised (hot.alerts; opened_at is event time):")
    print(format_table(pa.Table.from_pylist([dict(zip(names, row)) for row in rows])))


def _airflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("airflow") is not None


def _batch_direct(lake_root: str, hours: list, days: list) -> None:
    from beam_pipelines.gold.pipeline import run_gold
    from beam_pipelines.silver.pipeline import run_silver

    _step(f"Silver (Beam batch + quality gate), one run per closed Bronze hour: {len(hours)} hour(s)")
    for i, hour in enumerate(hours, 1):
        report = run_silver(SilverOptions(lake_root=lake_root, hour=format_hour(hour)))
        print(f"[{i}/{len(hours)}] {report.summary()}", flush=True)
    _step(f"Gold (Beam batch + quality gate), one run per day: {', '.join(d.isoformat() for d in days)}")
    for day in days:
        print(run_gold(GoldOptions(lake_root=lake_root, date=day.isoformat())).summary(), flush=True)


def _batch_through_airflow(lake_root: str, hours: list, days: list) -> None:
    """The DAGs an Airflow scheduler would run, each once with ``airflow dags test`` (real tasks, real
    sensors, the run recorded in Airflow's database, so ``lake airflow up`` shows them afterwards)."""
    _step(f"Airflow: metadata database in {airflow_home(lake_root)}")
    began = time.monotonic()
    db_migrate(lake_root)
    print(f"airflow db migrate: {time.monotonic() - began:.0f}s")

    def run(dag_id: str, logical, label: str, conf=None) -> None:
        began = time.monotonic()
        print(f"{label}: dag {dag_id}, logical date {logical} ...", flush=True)
        result = dags_test(dag_id, logical, lake_root, conf=conf)
        if result.state != "success":
            tail = "\n".join(line for line in result.output.splitlines()[-15:])
            raise LakeError(f"DAG {dag_id} ({logical}) ended {result.state}; its output ends with:\n{tail}")
        print(f"{label}: {result.state} in {time.monotonic() - began:.0f}s", flush=True)

    _step(
        f"Airflow DAG telemetry_bronze_to_silver, one run per closed Bronze hour ({len(hours)}): sensor on "
        "_COMPLETE, Bronze gate, Silver Beam job with its gate, run record"
    )
    for i, hour in enumerate(hours, 1):
        end = _dt.datetime.fromtimestamp(hour / 1000 + 3600, _dt.timezone.utc)  # dags test: the interval ends there
        run("telemetry_bronze_to_silver", end.isoformat(), f"[{i}/{len(hours)}] hour {format_hour(hour)}")
        record = read_record(lake_root, "silver", format_hour(hour))
        if record:
            print(f"    {record['published'].get('summary', '')}")
    _step(
        "Airflow DAG telemetry_silver_to_gold: Gold Beam job with its gate, per day (partial_day: the demo "
        "covers only some hours of it)"
    )
    for day in days:
        run(
            "telemetry_silver_to_gold",
            (day + _dt.timedelta(days=1)).isoformat(),
            f"day {day.isoformat()}",
            conf={"partial_day": True},
        )
        record = read_record(lake_root, "gold", day.isoformat())
        if record:
            print(f"    {record['published'].get('summary', '')}")


def _finish(settings, days: list, started: float, hot_dsn) -> None:
    from quality.runner import docs_index

    for day in days:
        _show(
            settings.lake_root,
            f"Gold, {day.isoformat()}: what the fleet did (gold_vehicle_hourly)",
            GOLD_SUMMARY_SQL.format(day=day.isoformat()),
        )
    _show(
        settings.lake_root,
        "busiest zones (gold_zone_hourly)",
        "SELECT zone_id, hour_start, active_vehicles, event_count, round(soc_avg, 1) AS soc_avg "
        "FROM gold_zone_hourly ORDER BY active_vehicles DESC, event_count DESC LIMIT 5",
    )
    if hot_dsn is not None:
        _show_alerts(hot_dsn)
        _show(
            settings.lake_root,
            "the same alerts in the lake (gold_alerts, copied by the daily DAG)",
            "SELECT rule, count(*) AS alerts FROM gold_alerts GROUP BY rule ORDER BY rule",
        )
    root = settings.lake_root
    print(f"\nquality reports (Great Expectations Data Docs): {docs_index(root)}")
    print(
        f"done in {time.monotonic() - started:.0f}s. Next:\n"
        f'  lake query --lake-root {root} "SELECT * FROM gold_vehicle_state LIMIT 5"\n'
        f"  lake airflow up --lake-root {root}     # the Airflow UI: the DAGs and the demo's runs "
        "(paused: unpause one to let the scheduler run it)\n"
        + (
            f"  LAKE_HOT_DSN={hot_dsn} lake serve --lake-root {root}   # the read API and dashboard\n"
            if hot_dsn
            else ""
        )
        + f"  lake broker stop --lake-root {root}"
    )


def _show(lake_root: str, title, sql: str) -> None:
    if title:
        print(f"\n{title}:")
    try:
        print(format_table(query(sql, lake_root)))
    except LakeError as exc:
        print(f"  ({exc})")
