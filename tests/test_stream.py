"""``lake stream`` for real: the embedded broker, PostgreSQL (a fresh database per test), the Beam pipeline.

The scripted fleet's alerts are known exactly (``support.hot_fleet``); a
replay into a second store must give the same rows and alert ids; SIGKILLs at
random points must leave exactly what an uninterrupted run leaves; a
PostgreSQL that goes away (a proxy we cut) makes the stream wait, not lose.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import apache_beam as beam
import psycopg2
import pytest
from confluent_kafka import Consumer, TopicPartition

from beam_pipelines.ingest.kafka_source import PartitionStart, PassBounds
from beam_pipelines.stream.options import StreamOptions
from beam_pipelines.stream.pipeline import beam_options, build, run_stream
from beam_pipelines.stream.store import StreamFenced, hold_stream_lock, prepare_store
from lake_core import hot_store
from lake_core.errors import ConfigError
from lake_schemas.hot import alert_id
from support.hot_fleet import T0, fresh_hot_store, scripted_fleet, snap, table_rows
from support.ingest_helpers import produce

ALERT_COLS = "alert_id::text, vehicle_id, rule, severity, opened_at, resolved_at, details::text"
WINDOW_COLS = "vehicle_id, window_start, event_count, soc_min, soc_avg, soc_max, speed_avg, speed_max, distance_km"
LIVE_COLS = "vehicle_id, lat, lon, soc_pct, charging, zone_id, last_event_id, last_event_ts, last_seen_at, online"


def _opts(settings, dsn, **kw):
    base = dict(
        bootstrap=settings.bootstrap,
        topic=settings.topic,
        dsn=dsn,
        until_idle=1.5,
        alerts_topic=f"{settings.topic}-alerts",
        progress=False,
    )
    base.update(kw)
    return StreamOptions(**base)


def _alert_events(bootstrap, topic) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        out = []
        if high > low:
            c.assign([TopicPartition(topic, 0, low)])
            # to the end: the last offset reached and then a quiet poll (a watermark's distance is no count
            # of records on the embedded broker, which gives a producer batch one offset per record or not)
            deadline, last = time.monotonic() + 30, -1
            while time.monotonic() < deadline:
                batch = [m for m in c.consume(500, 1.0) if m.error() is None]
                out += [json.loads(m.value()) for m in batch]
                last = max([last] + [m.offset() for m in batch])
                if not batch and last >= high - 1:
                    break
        return out
    finally:
        c.close()


def _snapshot(dsn) -> dict:
    return {
        "alerts": sorted(table_rows(dsn, f"SELECT {ALERT_COLS} FROM hot.alerts")),
        "1m": sorted(table_rows(dsn, f"SELECT {WINDOW_COLS} FROM hot.telemetry_1m")),
        "5m": sorted(table_rows(dsn, f"SELECT {WINDOW_COLS} FROM hot.telemetry_5m")),
        "zones": sorted(table_rows(dsn, "SELECT * FROM hot.zone_activity_5m")),
        "live": sorted(table_rows(dsn, f"SELECT {LIVE_COLS} FROM hot.live_vehicle_state")),
    }


@pytest.mark.slow
def test_scripted_fleet_end_to_end_then_a_replay_gives_the_same_rows_and_ids(settings):
    records, expected = scripted_fleet()
    produce(settings, records)
    with fresh_hot_store() as dsn, fresh_hot_store() as replay_dsn:
        report = run_stream(_opts(settings, dsn))
        assert report.total("records") == len(records)
        events = _alert_events(settings.bootstrap, f"{settings.topic}-alerts")
        got = sorted((e["vehicle_id"], e["rule"], e["state"], e["at"]) for e in events)
        want = sorted(
            (v, r, s, hot_store.ts_text(at).replace(" ", "T").replace("+00", "Z")) for v, r, s, at in expected
        )
        assert got == want
        # The report counts every alert event, also those committed with the state at a pass's end.
        assert report.total("alert_events") == len(events) and report.published == len(events)
        assert {e["alert_id"] for e in events if e["rule"] == "offline"} == {alert_id("OFF", "offline", T0 + 700_000)}
        alerts = table_rows(dsn, "SELECT vehicle_id, rule, resolved_at IS NULL FROM hot.alerts ORDER BY 1, 2")
        assert alerts == [("GEO", "geofence", False), ("LOW", "low_battery", True), ("OFF", "offline", False)]
        win = table_rows(
            dsn,
            "SELECT event_count, soc_min, soc_max FROM hot.telemetry_1m WHERE vehicle_id = 'WIN' "
            "AND window_start = '2026-03-01T08:00:00Z'",
        )
        assert win == [(4, 40.0, 50.0)]
        live = table_rows(dsn, "SELECT soc_pct, charging, online FROM hot.live_vehicle_state WHERE vehicle_id = 'LOW'")
        assert live == [(14.9, False, True)]
        counts = table_rows(dsn, "SELECT counts FROM hot.stream_counters")
        total = {}
        for (c,) in counts:
            for k, n in c.items():
                total[k] = total.get(k, 0) + n
        assert total["duplicates"] == 1 and total["too_late"] == 1 and total["records"] == len(records)

        # The same topic from its start, into a second store: the same rows, the same alert ids; with a
        # commit interval longer than the pass, everything commits with the state at the pass's end.
        replay = run_stream(
            _opts(settings, replay_dsn, alerts_topic=f"{settings.topic}-alerts-replay", commit_seconds=3600)
        )
        assert _snapshot(replay_dsn) == _snapshot(dsn)
        assert replay.total("alert_events") == len(expected) == replay.published
        # ... and running again over the first store (nothing new) changes nothing, publishes nothing.
        before = _snapshot(dsn)
        run_stream(_opts(settings, dsn))
        assert _snapshot(dsn) == before
        assert len(_alert_events(settings.bootstrap, f"{settings.topic}-alerts")) == len(expected)


def _fleet(vehicles: int, seconds: int, seed: int = 7) -> list:
    """A random fleet with many alerts of every rule: (key, value, record ms)."""
    rng = random.Random(seed)
    out = []
    soc = {f"R{v:03d}": rng.uniform(10, 40) for v in range(vehicles)}
    silent = {f"R{v:03d}": rng.randrange(0, seconds) for v in range(0, vehicles, 7)}
    for t in range(0, seconds, 5):
        for v in soc:
            if v in silent and silent[v] <= t < silent[v] + 700:
                continue
            soc[v] = min(100.0, max(0.0, soc[v] + rng.uniform(-1.2, 0.9)))
            outside = rng.random() < 0.02
            lat = 53.2 if outside else 52.52 + rng.uniform(-0.02, 0.02)
            value = snap(v, T0 + t * 1000, location={"lat": lat, "lon": 13.4}, battery={"soc_pct": round(soc[v], 1)})
            out.append((v.encode(), value, T0 + t * 1000))
            if rng.random() < 0.01:
                out.append((v.encode(), value, T0 + t * 1000))  # a redelivery
    return out


def _stream_cmd(settings, dsn, *extra) -> list:
    return [
        sys.executable, "-m", "lake.cli", "stream", "--bootstrap", settings.bootstrap, "--topic", settings.topic,
        "--hot-dsn", dsn, "--alerts-topic", f"{settings.topic}-alerts-k", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.mark.kafka_long
def test_sigkill_at_random_points_leaves_exactly_an_uninterrupted_runs_rows_and_alert_events(settings, tmp_path):
    records = _fleet(vehicles=40, seconds=2400)
    produce(settings, records)
    rng = random.Random(12)
    with fresh_hot_store() as clean_dsn, fresh_hot_store() as dsn:
        run_stream(_opts(settings, clean_dsn, alerts_topic=f"{settings.topic}-alerts-clean"))
        clean_events = _alert_events(settings.bootstrap, f"{settings.topic}-alerts-clean")
        assert len(clean_events) > 100
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        kills = 0
        for _ in range(3):
            proc = subprocess.Popen(
                _stream_cmd(settings, dsn, "--follow", "--poll-batch", "300", "--snapshot-seconds", "0.5"),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / "stream.log", "ab"),
            )
            time.sleep(rng.uniform(3.5, 7.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        assert kills >= 2
        done = subprocess.run(_stream_cmd(settings, dsn, "--until-idle", "2"), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        events = _alert_events(settings.bootstrap, f"{settings.topic}-alerts-k")
        key = lambda e: (e["alert_id"], e["state"], e["at"])  # noqa: E731
        assert sorted(map(key, events)) == sorted(map(key, clean_events)), "no alert event lost or doubled"
        assert _snapshot(dsn) == _snapshot(clean_dsn)


@pytest.mark.kafka_long
def test_two_workers_give_one_processs_rows_and_alert_ids_even_when_killed(settings, tmp_path):
    """``--workers 2``: each worker streams half the partitions; killing the parent takes its workers with it,
    and the next start resumes: the same rows and alert events as one uninterrupted process."""
    import psutil

    records = _fleet(vehicles=40, seconds=1800, seed=3)
    produce(settings, records)
    with fresh_hot_store() as clean_dsn, fresh_hot_store() as dsn:
        run_stream(_opts(settings, clean_dsn, alerts_topic=f"{settings.topic}-alerts-clean"))
        clean_events = _alert_events(settings.bootstrap, f"{settings.topic}-alerts-clean")
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        proc = subprocess.Popen(
            _stream_cmd(settings, dsn, "--follow", "--workers", "2", "--poll-batch", "300", "--snapshot-seconds", ".5"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "stream.log", "ab"),
        )

        def started_workers() -> list:  # a child shows the parent's command line until it has exec'd its own
            try:
                return [w for w in psutil.Process(proc.pid).children() if "--worker" in w.cmdline()]
            except psutil.Error:
                return []

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(started_workers()) < 2:
            time.sleep(0.1)
        workers = started_workers()
        assert len(workers) == 2, psutil.Process(proc.pid).children()
        time.sleep(4)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "a worker outlived the process that started it"
        done = subprocess.run(
            _stream_cmd(settings, dsn, "--until-idle", "2", "--workers", "2"), env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "streamed" in done.stdout
        events = _alert_events(settings.bootstrap, f"{settings.topic}-alerts-k")
        key = lambda e: (e["alert_id"], e["state"], e["at"])  # noqa: E731
        assert len(clean_events) > 50
        assert sorted(map(key, events)) == sorted(map(key, clean_events)), "no alert event lost or doubled"
        assert _snapshot(dsn) == _snapshot(clean_dsn)


@pytest.mark.slow
def test_a_worker_that_fails_stops_the_others_and_the_run_says_which(settings):
    """A partition's lock held elsewhere: its worker is refused; the other stops too, the run exits non-zero."""
    produce(settings, _fleet(vehicles=8, seconds=60, seed=5))
    with fresh_hot_store() as dsn:
        hold = psycopg2.connect(dsn)
        hold.autocommit = True
        with hold.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"lake-stream:{settings.topic}:1",))
        try:
            env = dict(os.environ, PYTHONPATH=os.getcwd())
            started = time.monotonic()
            done = subprocess.run(
                _stream_cmd(settings, dsn, "--follow", "--workers", "2"), env=env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
        finally:
            hold.close()
        assert done.returncode != 0
        assert f"another lake stream is running on partition 1 of {settings.topic}" in done.stderr
        assert "worker(s) failed: 1/2 exit 3" in done.stderr, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert time.monotonic() - started < 90, "the healthy worker was stopped, not left following"


def _drop(*socks):
    """Shut each socket down, then close it. Shut down first: a bare close() leaves a socket that another
    thread is blocked reading open (the read holds it), so its peer never learns: a PostgreSQL backend
    behind it stayed idle, holding the stream's lock, after the stream had closed its end. Each on its
    own: one already closed must not keep the rest open."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class _Proxy:
    """A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones refused) and restore."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:  # a connection is refused, or registered before a cut can run
                if not self.up.is_set():
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            _drop(a, b)

    def cut(self):
        with self.lock:
            self._cut()

    def _cut(self):
        self.up.clear()
        _drop(*self.conns)
        self.conns = []

    def restore(self):
        self.up.set()


@pytest.mark.slow
def test_postgresql_unreachable_mid_stream_waits_retries_loses_nothing_and_says_so(settings, capfd):
    records = _fleet(vehicles=20, seconds=1800, seed=3)
    with fresh_hot_store() as clean_dsn, fresh_hot_store() as direct_dsn:
        proxy = _Proxy()
        dsn = direct_dsn.replace(":5432/", f":{proxy.port}/")
        prepare_store(dsn, settings.topic, 4)
        produce(settings, records[: len(records) // 2])

        def outage():  # once the stream committed something: cut PostgreSQL off for 5 s, produce meanwhile
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if table_rows(direct_dsn, "SELECT coalesce(sum(next_offset), 0) FROM hot.stream_offsets")[0][0] > 0:
                    break
                time.sleep(0.05)
            proxy.cut()
            produce(settings, records[len(records) // 2 :])
            time.sleep(5)
            proxy.restore()

        cutter = threading.Thread(target=outage)
        cutter.start()
        report = run_stream(_opts(settings, dsn, until_idle=8.0, poll_batch=200))
        cutter.join()
        assert report.total("pg_waits") > 0, "the wait shows in the run's metrics"
        assert "PostgreSQL at" in capfd.readouterr().err
        # The reader's idleness is wall time since its last record: the wait can end the drained run
        # early. A second run takes the rest; together they hold every record exactly once. The first
        # run's lock went with its cut connection: the server ends that backend once it notices (at
        # most its keepalive probes, about 25 s), and the second run may start only then.
        deadline = time.monotonic() + 60
        held = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            f"AND objid = hashtext('lake-stream:{settings.topic}')::oid"
        )
        while table_rows(direct_dsn, held)[0][0]:
            holder = table_rows(
                direct_dsn,
                "SELECT a.pid, a.client_port, a.backend_start, a.state, a.query FROM pg_locks l "
                "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted "
                f"AND l.objid = hashtext('lake-stream:{settings.topic}')::oid",
            )
            open_upstreams = [c.getsockname() for c in proxy.conns if c.fileno() != -1]
            assert time.monotonic() < deadline, (
                f"the lock was never released: {holder}, proxy {proxy.port}, proxy sockets still open: {open_upstreams}"
            )
            time.sleep(0.5)
        rest = run_stream(_opts(settings, dsn))
        assert report.total("records") + rest.total("records") == len(records)
        run_stream(_opts(settings, clean_dsn, alerts_topic=f"{settings.topic}-alerts-clean"))
        assert _snapshot(direct_dsn) == _snapshot(clean_dsn)


def test_a_second_stream_on_the_same_topic_and_store_is_refused(settings):
    with fresh_hot_store() as dsn:
        prepare_store(dsn, settings.topic, 4)
        first = hold_stream_lock(dsn, settings.topic)
        try:
            with pytest.raises(StreamFenced, match="another lake stream"):
                hold_stream_lock(dsn, settings.topic, wait_s=0.5)
        finally:
            first.close()
        hold_stream_lock(dsn, settings.topic).close()  # released with its connection
        # a predecessor whose lock goes a moment later (its backend not yet gone): the restart waits for it
        first = hold_stream_lock(dsn, settings.topic)
        threading.Timer(1.0, first.close).start()
        hold_stream_lock(dsn, settings.topic, wait_s=10).close()


def test_migrations_are_idempotent_and_days_are_dropped_by_partition():
    import datetime as dt

    with fresh_hot_store() as dsn:
        conn = hot_store.connect(dsn)
        assert hot_store.migrate(conn) == [1, 2]
        assert hot_store.migrate(conn) == []
        with conn.cursor() as cur:
            days = [dt.date(2026, 3, d) for d in (1, 2, 3, 4)]
            hot_store.ensure_day_partitions(cur, days, set())
            dropped = hot_store.drop_days_before(cur, dt.date(2026, 3, 2))
            assert sorted(dropped) == sorted(f"{t}_p20260301" for t in hot_store.DAY_PARTITIONED)
            assert hot_store.day_partitions(cur)["alerts"] == days[1:]
            cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'hot'")
            indexes = {r[0] for r in cur.fetchall()}
        conn.commit()
        conn.close()
        assert {"alerts_open", "live_vehicle_state_pkey", "telemetry_1m_pkey"} <= indexes


def test_bad_options_fail_before_any_connection():
    for kw, message in (
        (dict(dsn="mysql://x"), "postgresql://"),
        (dict(geofence="/nonexistent.geojson"), "cannot read geofence"),
        (dict(until_idle=1.0, follow=True), "exclude each other"),
        (dict(webhook="ftp://x"), "http"),
        (dict(workers=0), "--workers must be from 1"),
        (dict(workers=2, runner="FlinkRunner"), "runner's parallelism"),
        (dict(worker="2/2"), "I must be from 0"),
        (dict(worker="half"), "must be I/N"),
    ):
        with pytest.raises(ConfigError, match=message):
            StreamOptions(bootstrap="b", topic="t", **kw)


@pytest.mark.parametrize("runner", ["FlinkRunner", "DataflowRunner"])
def test_the_streaming_runners_graph_builds_with_state_and_timers(runner):
    opts = StreamOptions(bootstrap="kafka:9092", topic="vehicle-telemetry", runner=runner)
    options = beam_options(opts, [])
    assert options.view_as(beam.options.pipeline_options.StandardOptions).streaming
    p = beam.Pipeline(runner="FnApiRunner", options=options)  # the graph only: those runners would submit it
    build(p, opts, [PartitionStart(opts.topic, i, 0) for i in range(3)], PassBounds())
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"PartitionStarts", "ReadKafkaPartitions", "KeyByPartition", "UpdateHotStore/UpdatePartition"} <= names
    pardo = next(t for t in proto.components.transforms.values() if t.unique_name == "UpdateHotStore/UpdatePartition")
    from apache_beam.portability.api import beam_runner_api_pb2

    payload = beam_runner_api_pb2.ParDoPayload.FromString(pardo.spec.payload)
    assert set(payload.state_specs) == {"partition_state"} and set(payload.timer_family_specs) == {"ts-tick"}


@pytest.mark.slow
def test_following_a_silent_vehicle_opens_offline_by_the_clock_between_passes(settings):
    from lake_schemas.hot import HotRules

    now = int(time.time() * 1000)
    produce(settings, [(b"QUIET", snap("QUIET", now), now)])
    rules = HotRules(offline_after_ms=2_000)
    with fresh_hot_store() as dsn:
        opts = _opts(settings, dsn, until_idle=None, follow=True, max_seconds=14.0, pass_seconds=4.0, rules=rules)
        run_stream(opts)
        rows = table_rows(dsn, "SELECT vehicle_id, rule, (extract(epoch FROM opened_at) * 1000)::bigint, "
                               "resolved_at FROM hot.alerts")  # fmt: skip
        assert rows == [("QUIET", "offline", now + 2_000, None)]
        assert table_rows(dsn, "SELECT online FROM hot.live_vehicle_state") == [(False,)]
        events = _alert_events(settings.bootstrap, f"{settings.topic}-alerts")
        assert [(e["vehicle_id"], e["rule"], e["state"]) for e in events] == [("QUIET", "offline", "open")]
