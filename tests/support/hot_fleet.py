"""A scripted fleet whose alerts and windows are known exactly, and a fresh hot store per test.

``scripted_fleet()`` returns the records (key, value, record timestamp) in
arrival order and ``EXPECTED_EVENTS``: every alert event the hot path must
raise, as (vehicle, rule, state, at ms).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Iterator

import psycopg2

from lake_core import hot_store

T0 = 1772352000000  # 2026-03-01T08:00:00Z
S = 1000
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
INSIDE = (52.52, 13.405)  # Berlin's centre: inside the default area
OUTSIDE = (53.10, 13.405)  # 64 km north: outside it


def snap(vehicle: str, ts: int, event_id: str | None = None, **groups) -> bytes:
    return json.dumps(
        {"schema_version": 1, "event_id": event_id or f"{vehicle}-{ts}", "vehicle_id": vehicle, "ts": ts, **groups}
    ).encode()


def battery(soc: float, charging: bool = False) -> dict:
    return {"battery": {"soc_pct": soc, "charging": charging}}


def location(lat: float, lon: float) -> dict:
    return {"location": {"lat": lat, "lon": lon}}


def scripted_fleet() -> tuple[list, list]:
    """``(records, expected alert events)``; records are ``(key, value, record_ms)`` in arrival order."""
    arrivals: list = []  # (arrival ms, key, value)

    def send(vehicle: str, ts: int, value: bytes, arrival: int | None = None) -> None:
        arrivals.append((ts if arrival is None else arrival, vehicle.encode(), value))

    # LOW: a battery sliding under 15 % (one alert), hovering around 15 % (still one), plugged in
    # (resolved), unplugged at 14.9 % two minutes later (the same alert reopens, no new one).
    socs = [20.0 - 0.5 * i for i in range(12)]  # 20.0 .. 14.5 at t = 0..110 s
    socs += [15.5, 14.8, 16.0, 14.2, 15.9, 14.1, 15.2]  # t = 120..180 s: hovering
    for i, soc in enumerate(socs):
        send("LOW", T0 + 10 * S * i, snap("LOW", T0 + 10 * S * i, **battery(soc), **location(*INSIDE)))
    send("LOW", T0 + 300 * S, snap("LOW", T0 + 300 * S, **battery(14.0, charging=True)))
    send("LOW", T0 + 420 * S, snap("LOW", T0 + 420 * S, **battery(14.9)))
    # GEO: leaves the area at 60 s, is back at 120 s.
    for t in range(0, 181, 30):
        pos = OUTSIDE if 60 <= t < 120 else INSIDE
        send("GEO", T0 + t * S, snap("GEO", T0 + t * S, **location(*pos)))
    # OFF: silent from 100 s for 11 minutes, then back.
    for t in range(0, 101, 10):
        send("OFF", T0 + t * S, snap("OFF", T0 + t * S, **battery(80.0)))
    send("OFF", T0 + 760 * S, snap("OFF", T0 + 760 * S, **battery(80.0)))
    # WIN: a window by hand (see EXPECTED_WINDOW), a duplicate, a late event inside the horizon
    # (arrives 4 min late) and one outside it (arrives 16 min late).
    win = [
        (0, 50.0, 10.0, (52.5000, 13.4000)),
        (20, 40.0, 20.0, (52.5010, 13.4000)),
        (40, 45.0, 30.0, (52.5020, 13.4010)),
        (50, 44.0, 25.0, (52.6000, 13.4010)),  # 11 km in 10 s: a GPS jump, its legs left out
    ]
    for t, soc, speed, pos in win:
        if t == 20:
            continue  # arrives late, below
        send("WIN", T0 + t * S, snap("WIN", T0 + t * S, **battery(soc), motion={"speed_kmh": speed}, **location(*pos)))
    send(
        "WIN",
        T0 + 50 * S,
        snap("WIN", T0 + 50 * S, **battery(44.0), motion={"speed_kmh": 25.0}, **location(52.6, 13.401)),
        arrival=T0 + 55 * S,
    )  # noqa: E501 - a duplicate
    for t in range(60, 1200, 60):
        send("WIN", T0 + t * S, snap("WIN", T0 + t * S, **battery(60.0), **location(52.5, 13.4)))
    t, soc, speed, pos = win[1]
    send(
        "WIN",
        T0 + t * S,
        snap("WIN", T0 + t * S, **battery(soc), motion={"speed_kmh": speed}, **location(*pos)),
        arrival=T0 + 260 * S,
    )  # noqa: E501
    send(
        "WIN", T0 + 5 * S, snap("WIN", T0 + 5 * S, **battery(1.0)), arrival=T0 + 1190 * S
    )  # too late: no alert, no window
    arrivals.sort(key=lambda a: a[0])  # a stable sort: equal arrival times keep their order
    records = [(key, value, arrival) for arrival, key, value in arrivals]
    expected = [
        ("LOW", "low_battery", "open", T0 + 110 * S),
        ("LOW", "low_battery", "resolved", T0 + 300 * S),
        ("LOW", "low_battery", "open", T0 + 420 * S),
        ("GEO", "geofence", "open", T0 + 60 * S),
        ("GEO", "geofence", "resolved", T0 + 120 * S),
        ("OFF", "offline", "open", T0 + 700 * S),
        ("OFF", "offline", "resolved", T0 + 760 * S),
    ]
    return records, expected


#: WIN's first 1-minute window: 4 events (the duplicate not counted, the late one counted), legs A-B and B-C
#: (C-D implies 4,000 km/h: left out).
EXPECTED_WINDOW = {
    "event_count": 4,
    "soc_min": 40.0,
    "soc_avg": (50.0 + 40.0 + 45.0 + 44.0) / 4,
    "soc_max": 50.0,
    "speed_avg": (10.0 + 20.0 + 30.0 + 25.0) / 4,
    "speed_max": 30.0,
    "points": [(52.5000, 13.4000), (52.5010, 13.4000), (52.5020, 13.4010)],
}


@contextlib.contextmanager
def fresh_hot_store() -> Iterator[str]:
    """A new PostgreSQL database (dropped afterwards); yields its DSN."""
    name = f"lake_hot_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        yield dsn
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def table_rows(dsn: str, sql: str) -> list:
    conn = hot_store.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()
