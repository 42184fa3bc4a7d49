"""A real hot store (a fresh PostgreSQL database, migrated by ``lake_core.hot_store``) and a real
Silver table, filled with a fleet whose numbers the read API tests know, and ``lake serve`` running.

Telemetry of a vehicle follows ``soc_at(t)`` and ``speed_at(t)`` (known at
every instant), written at 1 Hz or every ``step_s`` to Silver and as 1-minute
windows to ``hot.telemetry_1m``, so a test can tell where each point came from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import subprocess
import sys
import time
import uuid
from typing import Iterator, Optional

import psycopg2
import psycopg2.extras
import pyarrow as pa
import pytest

from lake_core import hot_store
from lake_core.processes import free_port
from lake_core.registry import upsert_vehicles
from lake_schemas import SILVER_SCHEMA

PG_ADMIN = os.environ.get("LAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MINUTE_MS = 60_000
DAY_MS = 86_400_000


def soc_at(t_ms: int) -> float:
    """Battery: a slow wave between 10 and 90 % (period 6 h)."""
    return round(50 + 40 * math.sin(t_ms / 3_600_000 * 2 * math.pi / 6), 3)


def speed_at(t_ms: int) -> float:
    return round(15 + 10 * math.sin(t_ms / 600_000), 3)


def pg_available() -> Optional[str]:
    try:
        psycopg2.connect(PG_ADMIN, connect_timeout=3).close()
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


@contextlib.contextmanager
def hot_database(days: int = 6) -> Iterator[str]:
    """A new database with the hot store's tables and day partitions for the last ``days`` days; dropped after."""
    reason = pg_available()
    if reason is not None:
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN}: {reason}")
    name = f"lake_read_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        conn = hot_store.connect(dsn)
        hot_store.migrate(conn)
        today = dt.datetime.now(dt.timezone.utc).date()
        with conn.cursor() as cur:
            hot_store.ensure_day_partitions(cur, [today - dt.timedelta(d) for d in range(-1, days)], set())
        conn.commit()
        conn.close()
        yield dsn
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def insert_vehicles(dsn: str, rows: list[dict]) -> None:
    """``rows``: dicts of live_vehicle_state columns (vehicle_id, lat, lon, soc_pct, ..., last_event_ts ms)."""
    columns = (
        "vehicle_id",
        "lat",
        "lon",
        "soc_pct",
        "charging",
        "speed_kmh",
        "in_use",
        "locked",
        "zone_id",
        "last_event_ts",
        "last_seen_at",
        "online",
        "in_operating_area",
        "kafka_partition",
        "kafka_offset",
    )
    values = [tuple(ts(r[c]) if c in ("last_event_ts", "last_seen_at") else r.get(c) for c in columns) for r in rows]
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur, f"INSERT INTO hot.live_vehicle_state ({', '.join(columns)}) VALUES %s", values, page_size=2000
        )
        conn.commit()


def insert_minutes(dsn: str, vehicle_id: str, start_ms: int, end_ms: int) -> int:
    """1-minute windows of ``vehicle_id`` from ``start_ms`` to ``end_ms`` following soc_at/speed_at."""
    rows = []
    for w in range(start_ms - start_ms % MINUTE_MS, end_ms, MINUTE_MS):
        socs = [soc_at(w + s * 1000) for s in range(0, 60, 10)]
        speeds = [speed_at(w + s * 1000) for s in range(0, 60, 10)]
        rows.append((vehicle_id, ts(w), 6, min(socs), sum(socs) / 6, max(socs), sum(speeds) / 6, max(speeds), 0.1))
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO hot.telemetry_1m (vehicle_id, window_start, event_count, soc_min, soc_avg, soc_max, "
            "speed_avg, speed_max, distance_km) VALUES %s",
            rows,
            page_size=5000,
        )
        conn.commit()
    return len(rows)


def insert_alerts(dsn: str, alerts: list[tuple]) -> None:
    """``alerts``: (alert_id, vehicle_id, rule, severity, opened_at ms, resolved_at ms or None, details dict)."""
    rows = [
        (a, v, r, s, ts(o), None if c is None else ts(c), psycopg2.extras.Json(d)) for a, v, r, s, o, c, d in alerts
    ]
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO hot.alerts (alert_id, vehicle_id, rule, severity, opened_at, resolved_at, details) VALUES %s",
            rows,
        )
        conn.commit()


def insert_zones(dsn: str, rows: list[tuple]) -> None:
    """``rows``: (zone_id, window_start ms, active_vehicles, event_count)."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO hot.zone_activity_5m_parts (zone_id, window_start, kafka_partition, active_vehicles, "
            "event_count) VALUES %s",
            [(z, ts(w), 0, a, e) for z, w, a, e in rows],
        )
        conn.commit()


def silver_table(vehicle_id: str, start_ms: int, end_ms: int, step_s: int, vehicle_type: str = "scooter") -> pa.Table:
    """Silver rows of one vehicle every ``step_s`` seconds in ``[start_ms, end_ms)`` (soc_at, speed_at)."""
    t = list(range(start_ms, end_ms, step_s * 1000))
    n = len(t)
    columns: dict = {
        "vehicle_id": [vehicle_id] * n,
        "event_id": [f"{vehicle_id}-{x}" for x in t],
        "event_ts": t,
        "ingest_ts": t,
        "event_date": [ts(x).date() for x in t],
        "ts_corrected": [False] * n,
        "source_shape": ["snapshot"] * n,
        "soc_pct": [soc_at(x) for x in t],
        "speed_kmh": [speed_at(x) for x in t],
        "lat": [52.52] * n,
        "lon": [13.405] * n,
        "vehicle_type": [vehicle_type] * n,
        "kafka_partition": [0] * n,
        "kafka_offset": list(range(n)),
    }
    arrays = []
    for field in SILVER_SCHEMA:
        if field.name in columns:
            arrays.append(pa.array(columns[field.name], type=field.type))
        else:
            arrays.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SILVER_SCHEMA)


def write_silver(lake_root: str, table: pa.Table) -> None:
    from deltalake import write_deltalake

    write_deltalake(f"{lake_root}/silver/telemetry", table, mode="append", partition_by=["event_date"])


def register(lake_root: str, types: dict[str, str]) -> None:
    upsert_vehicles(lake_root, list(types), list(types.values()))


@contextlib.contextmanager
def serving(lake_root: str, dsn: str, extra_env: Optional[dict] = None, args: tuple = ()) -> Iterator[str]:
    """``lake serve`` in its own process on a free port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "LAKE_HOT_DSN": dsn, "LAKE_ROOT": lake_root, **(extra_env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lake.cli", "serve", "--port", str(port), "--no-kafka", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"lake serve exited {proc.returncode}: {proc.stderr.read()}")
            try:
                httpx.get(url + "/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
