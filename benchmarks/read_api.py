"""``python -m benchmarks.read_api``

The read API (``lake serve``) against a real hot store and Silver, with a
bare Starlette endpoint on uvicorn in the same run as the baseline (the
machine is shared: compare ratios, not absolutes). Builds:

- ``hot.live_vehicle_state`` with 10,000 vehicles; one vehicle's last 24 h
  as 1-minute windows (1,440 rows: the hot store's finest grain);
- Silver: that vehicle at 1 Hz for the 90 days that end 3.5 days ago
  (7.8M events, one vehicle: the benchmark measures the API, not a fleet's
  partition scans).

Then, sequentially on one keep-alive connection (latency, not queueing):
the bare endpoint, ``GET /v1/vehicles?limit=10000``, a vehicle's last 24 h
from the hot store, one day of Silver at 1 Hz (86,400 events downsampled to
2,000), 90 days of Silver (7.8M events to 2,000 and to 10,000 points);
p50/p95/max of each. Then ``wrk`` (2 threads, 8 connections) on the bare
endpoint and ``/v1/vehicles?limit=100``: requests/s and the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import pyarrow as pa

from lake_core.processes import free_port
from lake_schemas import SILVER_SCHEMA

DAY_MS = 86_400_000
VEHICLE = "V000001"


def _silver(lake_root: str, start_ms: int, end_ms: int) -> int:
    from deltalake import write_deltalake

    t = np.arange(start_ms, end_ms, 1000, dtype=np.int64)
    n = len(t)
    soc = 50 + 40 * np.sin(t / 3_600_000 * 2 * np.pi / 6)
    speed = 15 + 10 * np.sin(t / 600_000)
    days = (t // DAY_MS).astype("int32")
    columns = {
        "vehicle_id": pa.array(np.full(n, VEHICLE, dtype=object), pa.string()),
        "event_id": pa.array(t.astype(str).astype(object), pa.string()),
        "event_ts": pa.array(t, pa.timestamp("ms", tz="UTC")),
        "ingest_ts": pa.array(t, pa.timestamp("ms", tz="UTC")),
        "event_date": pa.array(days, pa.date32()),
        "ts_corrected": pa.array(np.zeros(n, dtype=bool)),
        "source_shape": pa.array(np.full(n, "snapshot", dtype=object), pa.string()),
        "soc_pct": pa.array(soc.round(2)),
        "speed_kmh": pa.array(speed.round(2)),
        "vehicle_type": pa.array(np.full(n, "scooter", dtype=object), pa.string()),
        "kafka_partition": pa.array(np.zeros(n, dtype=np.int32)),
        "kafka_offset": pa.array(np.arange(n, dtype=np.int64)),
    }
    arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, type=f.type) for f in SILVER_SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=SILVER_SCHEMA)
    write_deltalake(f"{lake_root}/silver/telemetry", table, mode="overwrite", partition_by=["event_date"])
    return n


def _hot(dsn: str, now_ms: int) -> None:
    import psycopg2
    import psycopg2.extras

    from lake_core import hot_store

    conn = hot_store.connect(dsn)
    hot_store.migrate(conn)
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc).date()
    with conn.cursor() as cur:
        hot_store.ensure_day_partitions(cur, [today - dt.timedelta(d) for d in range(-1, 4)], set())
        ts = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)  # noqa: E731
        rng = np.random.default_rng(1)
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO hot.live_vehicle_state (vehicle_id, lat, lon, soc_pct, charging, speed_kmh, in_use, locked, "
            "zone_id, last_event_ts, last_seen_at, online, in_operating_area, kafka_partition, kafka_offset) VALUES %s",
            [
                (
                    f"V{i:06d}",
                    52.52 + rng.normal(0, 0.05),
                    13.4 + rng.normal(0, 0.08),
                    float(rng.uniform(0, 100)),
                    bool(rng.random() < 0.1),
                    float(rng.uniform(0, 25)),
                    bool(rng.random() < 0.4),
                    False,
                    "u33dbb",
                    ts(now_ms),
                    ts(now_ms),
                    True,
                    True,
                    i % 8,
                    i,
                )
                for i in range(10_000)
            ],
            page_size=2000,
        )
        start = now_ms - now_ms % 60_000 - DAY_MS
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO hot.telemetry_1m (vehicle_id, window_start, event_count, soc_min, soc_avg, soc_max, "
            "speed_avg, speed_max, distance_km) VALUES %s",
            [(VEHICLE, ts(w), 60, 40.0, 41.0, 42.0, 10.0, 20.0, 0.2) for w in range(start, now_ms, 60_000)],
            page_size=2000,
        )
    conn.commit()
    conn.close()


def _wait(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            sys.exit(f"{proc.args[:3]} exited {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                sys.exit(f"{url} did not answer")
            time.sleep(0.2)


def _latency(client: httpx.Client, url: str, count: int, check=None) -> dict:
    client.get(url)  # warm: connection, caches, first DuckDB import
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.get(url)
        times.append(time.perf_counter() - started)
        if answer.status_code != 200:
            sys.exit(f"{url}: {answer.status_code} {answer.text[:300]}")
    if check is not None:
        check(answer.json())
    ms = sorted(t * 1000 for t in times)
    return {"p50": statistics.median(ms), "p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "max": ms[-1]}


def _wrk(url: str, seconds: int) -> float:
    if shutil.which("wrk") is None:
        return float("nan")
    out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", url], capture_output=True, text=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("Requests/sec:")), "Requests/sec: nan")
    return float(line.split()[1])


BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def ok(request):
    return Response(b'{"ok":true}', media_type="application/json")

app = Starlette(routes=[Route("/bare", ok)])
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="a server to create a database on"
    )
    ap.add_argument("--silver-days", type=int, default=90)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    args = ap.parse_args(argv)
    import psycopg2

    now = int(time.time() * 1000)
    name = f"lake_bench_{os.getpid()}"
    admin = psycopg2.connect(args.pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dsn = args.pg.rsplit("/", 1)[0] + "/" + name
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lake-bench-") as work:
            root = os.path.join(work, "lake")
            silver_end = now - int(3.5 * DAY_MS)
            silver_start = silver_end - args.silver_days * DAY_MS
            started = time.perf_counter()
            events = _silver(root, silver_start, silver_end)
            _hot(dsn, now)
            print(
                f"setup: {events:,} Silver events, 10,000 vehicles, 1,440 hot minutes in "
                f"{time.perf_counter() - started:.0f}s",
                flush=True,
            )
            with open(os.path.join(work, "bare_app.py"), "w") as f:
                f.write(BARE_APP)
            bare_port, api_port = free_port(), free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "bare_app:app",
                        "--port",
                        str(bare_port),
                        "--log-level",
                        "warning",
                    ],
                    cwd=work,
                )
            )
            procs.append(
                subprocess.Popen(
                    [
                        os.path.join(os.path.dirname(sys.executable), "lake"),
                        "serve",
                        "--lake-root",
                        root,
                        "--port",
                        str(api_port),
                        "--no-kafka",
                    ],
                    env={**os.environ, "LAKE_HOT_DSN": dsn},
                    stdout=subprocess.DEVNULL,
                )
            )
            bare, api = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{api_port}"
            _wait(bare + "/bare", procs[0])
            _wait(api + "/healthz", procs[1])
            day_start = silver_end - DAY_MS
            cases = [
                ("bare Starlette endpoint", f"{bare}/bare", 200, None),
                (
                    "GET /v1/vehicles (10,000 vehicles)",
                    f"{api}/v1/vehicles?limit=10000",
                    40,
                    lambda b: b["count"] == 10_000 or sys.exit("not 10,000 vehicles"),
                ),
                (
                    "last 24 h, hot store (~1,440 minutes)",
                    f"{api}/v1/vehicles/{VEHICLE}/telemetry?max_points=2000",
                    40,
                    lambda b: len(b["points"]) >= 1430 or sys.exit(f"{len(b['points'])} points"),
                ),
                (
                    "24 h of Silver at 1 Hz (86,400 -> 2,000)",
                    f"{api}/v1/vehicles/{VEHICLE}/telemetry?start={day_start}&end={silver_end}&max_points=2000",
                    30,
                    lambda b: (b["points_in_range"] > 2000 and len(b["points"]) <= 2000) or sys.exit("not downsampled"),
                ),
                (
                    f"{args.silver_days} days of Silver (7.8M -> 2,000)",
                    f"{api}/v1/vehicles/{VEHICLE}/telemetry?start={silver_start}&end={silver_end}&max_points=2000",
                    8,
                    None,
                ),
                (
                    f"{args.silver_days} days of Silver (7.8M -> 10,000)",
                    f"{api}/v1/vehicles/{VEHICLE}/telemetry?start={silver_start}&end={silver_end}",
                    8,
                    None,
                ),
            ]
            results = {}
            with httpx.Client(timeout=60) as client:
                for label, url, count, check in cases:
                    results[label] = r = _latency(client, url, count, check)
                    print(
                        f"{label}: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, max {r['max']:.1f} ms ({count} runs)",
                        flush=True,
                    )
            bare_rps = _wrk(f"{bare}/bare", args.wrk_seconds)
            api_rps = _wrk(f"{api}/v1/vehicles?limit=100", args.wrk_seconds)
            print(
                f"wrk: bare {bare_rps:,.0f} requests/s, /v1/vehicles?limit=100 {api_rps:,.0f} requests/s, "
                f"ratio {api_rps / bare_rps:.3f}"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
