"""Benchmarks of the hot path (``lake stream``, contract section 9).

``catchup``: replay N events (default 1M, snapshots of 1,000 vehicles) from
the topic into a fresh hot store with ``lake stream --until-idle``, against a
plain baseline in the same run (one consumer, msgspec decode, the latest row
per vehicle in a dict, one COPY at the end: the first loop a data engineer
writes, with no windows, no alerts, no exactly-once); prints events/s for
both and their ratio, and PostgreSQL's size per million events.

``live``: the fleet paced on the clock (default 10,000 vehicles at 1 Hz =
10,000 events/s; the Kafka record timestamp and the event time are the send
time), ``lake stream --follow`` running; a poller reads
``live_vehicle_state`` every 100 ms and a consumer reads ``vehicle-alerts``;
prints p50/p95/p99 of produce -> row and produce -> alert, and the stream
process's CPU (user+sys seconds per wall second, all its threads).

The machine is shared: absolute figures move with the neighbours' load, so
compare the ratio (catchup) and read the latencies with the CPU figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

import msgspec
import psutil
import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.common import kafka, produce_snapshots
from lake_core import hot_store
from lake_core.kafka_admin import ensure_topics

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
IDLE_SECONDS = 2.0


def _database() -> str:
    name = f"lake_hot_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _drop(dsn: str) -> None:
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.close()


def _lake() -> str:
    return os.path.join(os.path.dirname(sys.executable), "lake")


# --------------------------------------------------------------------------- catch-up
def baseline(bootstrap: str, topic: str, partitions: int, expected: int, dsn: str) -> float:
    """The plain loop: consume, decode, keep each vehicle's latest snapshot, COPY them at the end."""
    started = time.perf_counter()
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-baseline", "enable.auto.commit": False,
         "fetch.max.bytes": 64 * 1024 * 1024}
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    latest: dict = {}
    seen = 0
    while seen < expected:
        for m in consumer.consume(5000, 1.0):
            if m.error():
                continue
            doc = msgspec.json.decode(m.value())
            latest[doc["vehicle_id"]] = (doc.get("battery") or {}).get("soc_pct"), doc["ts"]
            seen += 1
    consumer.close()
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE latest (vehicle_id text PRIMARY KEY, soc double precision, ts text)")
        null = "\\N"
        buf = "".join(f"{v}\t{null if s is None else s}\t{t}\n" for v, (s, t) in latest.items())
        cur.copy_from(io.StringIO(buf), "latest")
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def lake_stream_catchup(bootstrap: str, topic: str, dsn: str, workers: int = 1) -> float:
    cmd = [_lake(), "stream", "--bootstrap", bootstrap, "--topic", topic, "--hot-dsn", dsn,
           "--until-idle", str(IDLE_SECONDS), "--alerts-topic", f"{topic}-alerts",
           "--workers", str(workers)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"lake stream failed ({done.returncode}): {done.stderr.strip().splitlines()[-3:]}")
    for line in done.stderr.splitlines():
        if line.startswith("pass "):
            print(line, flush=True)
    print(done.stdout.strip().splitlines()[-1], flush=True)
    return elapsed - IDLE_SECONDS


def catchup(args: argparse.Namespace) -> None:
    with kafka(args.bootstrap) as bootstrap:
        topic, events, raw_bytes = produce_snapshots(bootstrap, args.events, args.partitions)
        base_dsn, dsn = _database(), _database()
        try:
            base_s = baseline(bootstrap, topic, args.partitions, events, base_dsn)
            print(
                f"baseline (consume + decode + latest per vehicle + COPY): {events / base_s:,.0f} events/s", flush=True
            )
            stream_s = lake_stream_catchup(bootstrap, topic, dsn, args.workers)
            base2_dsn = _database()
            try:  # again after: the machine is shared, its load moves
                base2_s = baseline(bootstrap, topic, args.partitions, events, base2_dsn)
            finally:
                _drop(base2_dsn)
            print(f"baseline again, after the stream: {events / base2_s:,.0f} events/s", flush=True)
            base_s = (base_s + base2_s) / 2
            print(
                f"lake stream catch-up ({args.workers} worker(s)): "
                f"{events:,} events in {stream_s:.1f}s = {events / stream_s:,.0f} events/s "
                f"(target 50,000), {base_s / stream_s:.2f}x the baseline's rate (idle bound subtracted; "
                "includes Beam's start and PostgreSQL commits)",
                flush=True,
            )
            conn = psycopg2.connect(dsn)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_database_size(current_database())")
                size = cur.fetchone()[0]
                cur.execute("SELECT pg_total_relation_size(c.oid), c.relname FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE n.nspname = 'hot' AND c.relkind IN ('r', 'p') "
                            "ORDER BY 1 DESC LIMIT 6")  # fmt: skip
                tables = cur.fetchall()
            conn.close()
            empty = 7.5e6  # an empty database with the schema is about this size
            print(
                f"PostgreSQL: database {size / 1e6:,.1f} MB after {events:,} events = "
                f"{(size - empty) / 1e6 / (events / 1e6):,.1f} MB per million events above an empty one "
                f"({raw_bytes / 1e6 / (events / 1e6):,.0f} MB of raw JSON per million); biggest: "
                + ", ".join(f"{name} {b / 1e6:.1f} MB" for b, name in tables),
                flush=True,
            )
        finally:
            _drop(base_dsn)
            _drop(dsn)


# --------------------------------------------------------------------------- live
class _Pacer(threading.Thread):
    """Every second, one snapshot per vehicle, spread over the second; some batteries dip under 15 % and recover."""

    def __init__(self, bootstrap: str, topic: str, vehicles: int, seconds: float):
        super().__init__(daemon=True)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 10**6}
        )
        self.topic, self.vehicles, self.seconds = topic, vehicles, seconds
        self.sent = 0
        self.behind_s = 0.0

    def run(self) -> None:
        ids = [f"L{v:05d}" for v in range(self.vehicles)]
        start = time.time()
        tick = 0
        slices = 20
        per_slice = -(-self.vehicles // slices)
        while time.time() - start < self.seconds:
            for s in range(slices):
                due = start + tick + s / slices
                wait = due - time.time()
                if wait > 0:
                    time.sleep(wait)
                else:
                    self.behind_s = max(self.behind_s, -wait)
                now = int(time.time() * 1000)
                for i, v in enumerate(ids[s * per_slice : (s + 1) * per_slice], start=s * per_slice):
                    # 1 vehicle in 500 flips between 10 % and 30 % every 10 s: an open and a resolve each.
                    low = i % 500 == 0 and (tick // 10) % 2 == 1
                    doc = {"schema_version": 1, "event_id": f"{v}-{now}", "vehicle_id": v, "ts": now,
                           "location": {"lat": 52.52 + (i % 100) * 1e-3, "lon": 13.4},
                           "battery": {"soc_pct": 10.0 if low else 30.0 + (i % 50), "charging": False},
                           "motion": {"speed_kmh": 12.0}}  # fmt: skip
                    self.producer.produce(self.topic, key=v.encode(), value=json.dumps(doc).encode(), timestamp=now)
                    self.sent += 1
                self.producer.poll(0)
            tick += 1
        self.producer.flush(30)


def _percentiles(values: list) -> str:
    if len(values) < 2:
        return f"n={len(values)}"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:.2f}s, p95 {q[94]:.2f}s, p99 {q[98]:.2f}s (n={len(values):,})"


def live(args: argparse.Namespace) -> None:
    with kafka(args.bootstrap) as bootstrap:
        topic = f"bench-live-{uuid.uuid4().hex[:8]}"
        alerts_topic = f"{topic}-alerts"
        ensure_topics(bootstrap, [topic, alerts_topic], args.partitions)
        ensure_topics(bootstrap, [alerts_topic], 1)
        dsn = _database()
        cmd = [_lake(), "stream", "--bootstrap", bootstrap, "--topic", topic, "--hot-dsn", dsn, "--follow",
               "--alerts-topic", alerts_topic, "--pass-seconds", str(args.pass_seconds)]  # fmt: skip
        log = open(os.path.join("/tmp", f"{topic}.log"), "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            # Wait for the stream to be up (its offsets registered), then pace the fleet.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    rows = _rows(dsn, "SELECT count(*) FROM hot.stream_offsets")
                    if rows and rows[0][0] > 0:
                        break
                except psycopg2.Error:
                    pass
                time.sleep(0.5)
            time.sleep(5)  # Beam's start of the first pass
            row_lat: list = []
            alert_lat: list = []
            stop = threading.Event()
            warmup_ms = int((time.time() + args.warmup) * 1000)
            threading.Thread(target=_poll_rows, args=(dsn, row_lat, stop, warmup_ms), daemon=True).start()
            threading.Thread(target=_read_alerts, args=(bootstrap, alerts_topic, alert_lat, stop, warmup_ms),
                             daemon=True).start()  # fmt: skip
            ps = psutil.Process(proc.pid)
            pacer = _Pacer(bootstrap, topic, args.vehicles, args.seconds)
            backends = _backends(dsn)
            cpu0 = _cpu(ps)
            pg0 = _cpu_of(backends)
            wall0 = time.monotonic()
            pacer.start()
            pacer.join()
            time.sleep(5)
            cpu = (_cpu(ps) - cpu0) / (time.monotonic() - wall0)
            pg_cpu = (_cpu_of(backends) - pg0) / (time.monotonic() - wall0)
            stop.set()
            rate = pacer.sent / args.seconds
            print(f"paced {pacer.sent:,} events in {args.seconds:.0f}s = {rate:,.0f} events/s "
                  f"(the pacer fell behind by at most {pacer.behind_s:.2f}s)")  # fmt: skip
            print(f"produce -> live_vehicle_state row: {_percentiles(row_lat)} (polled every 0.1 s; after "
                  f"{args.warmup:.0f}s warm-up)")  # fmt: skip
            print(f"produce -> vehicle-alerts event: {_percentiles(alert_lat)}")
            print(f"lake stream CPU: {cpu:.2f} cores (user+sys per wall second, its process and threads) "
                  f"= {cpu / max(rate, 1) * 1e6:.0f} µs of CPU per event; "
                  f"its PostgreSQL backends: {pg_cpu:.2f} cores")  # fmt: skip
        finally:
            proc.send_signal(2)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            _drop(dsn)


def _cpu(ps: psutil.Process) -> float:
    total = 0.0
    for p in [ps, *ps.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _backends(dsn: str) -> list:
    """The PostgreSQL server processes serving the stream's connections."""
    pids = [r[0] for r in _rows(dsn, "SELECT pid FROM pg_stat_activity WHERE application_name = 'lake-stream'")]
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return out


def _cpu_of(processes: list) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _rows(dsn: str, sql: str) -> list:
    conn = hot_store.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _poll_rows(dsn: str, out: list, stop: threading.Event, warmup_ms: int) -> None:
    """Each vehicle's newest row as it appears: latency = when seen - its event time (the send time)."""
    conn = hot_store.connect(dsn)
    conn.autocommit = True
    last: dict = {}
    with conn.cursor() as cur:
        while not stop.is_set():
            cur.execute(
                "SELECT vehicle_id, (extract(epoch FROM last_event_ts) * 1000)::bigint FROM hot.live_vehicle_state"
            )
            seen = time.time() * 1000
            for vehicle, ts in cur.fetchall():
                if last.get(vehicle) != ts:
                    last[vehicle] = ts
                    if ts >= warmup_ms:
                        out.append((seen - ts) / 1000)
            time.sleep(0.1)
    conn.close()


def _read_alerts(bootstrap: str, topic: str, out: list, stop: threading.Event, warmup_ms: int) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    while not stop.is_set():
        for m in c.consume(100, 0.2):
            if m.error() is None:
                doc = json.loads(m.value())
                at = hot_store_ms(doc["at"])
                if at >= warmup_ms:
                    out.append(time.time() - at / 1000)
    c.close()


def hot_store_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("catchup")
    c.add_argument("--events", type=int, default=1_000_000)
    c.add_argument("--partitions", type=int, default=8)
    c.add_argument("--bootstrap")
    c.add_argument("--workers", type=int, default=1, help="lake stream --workers (default 1)")
    c.set_defaults(func=catchup)
    lv = sub.add_parser("live")
    lv.add_argument("--vehicles", type=int, default=10_000)
    lv.add_argument("--seconds", type=float, default=60.0)
    lv.add_argument("--warmup", type=float, default=10.0)
    lv.add_argument("--pass-seconds", type=float, default=60.0)
    lv.add_argument("--partitions", type=int, default=8)
    lv.add_argument("--bootstrap")
    lv.set_defaults(func=live)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
