"""One small hand-made lake, and what Silver and Gold must make of it.

Bronze hours 2026-03-01T08 and T09 (the ingest files a record by its Kafka
time, so ``ingest`` below decides the hour). Registry: V1 scooter, V2 car,
S1 ebike; V3 and S2 are not registered.

V1 (snapshots, in use) rides north along 13.0 E in hour 08:
    e1 08:00:00 lat 52.000 soc 50 speed 10   in_use
    e2 08:00:10 lat 52.001 soc 14            in_use   (low battery: not charging)
    e3 08:00:20 lat 52.002 soc 11 charging   in_use   (not low: charging)
    e4 08:00:20 lat 52.003                   idle     (same event_ts as e3: leg left out)
    e5 08:01:30 lat 52.004 speed 20          in_use
    e6 08:02:00 lat 53.000                   in_use   (a 110 km jump in 30 s: leg left out)
    e7 08:03:30 no position, soc 80          in_use   (gap 90 s after e6: not usage)
    e8 08:04:00 lat 53.001                   idle     (leg from e6, skipping e7)
  duplicates: e1 again in hour 08 (identical); e3 twice with the same
  ingest time in partitions 1 and 0 (partition 0 wins: soc 11, not 12);
  e5 again later in hour 08 with soc 99 (the first copy wins); e2 again in
  hour 09 (identical); e8 again in hour 09 with another position (Silver
  keeps the first).
  hour 09: e9 09:00:10 lat 52.000, e10 09:00:40 lat 52.001, both in use.

V2 (snapshots, clocks off), ingested 08:30:00:
    k1 sent 10 min ahead -> corrected; k2 8 days behind -> corrected;
    k3 exactly 5 min ahead -> kept; k4 6 days behind -> kept (2026-02-23).

V3 (unregistered): one good row v3a 08:10:00, and one row per quarantine
reason: q1 lat 95 (gps), q2 0/0 (gps), q3 only lat (gps), q4 soc 120, q5
speed 301, q6 lat 95 and soc 120 (gps: the first rule wins); plus one
payload Silver cannot parse (``malformed_payload``) in its own file.

S1 (signals): at 08:00:00 lat/lon 52.5/13.4, speed 12, soc 80, ignition 1,
charging 0, odometer 100.5, battery_temp 20; at 08:00:30 lat/lon 52.501/13.4
(lat delivered twice), speed 14; a soc of 200 at 08:00:40 (invalid_soc); at
08:01:00 a lat whose lon arrives in hour 09 (both halves quarantined). In
hour 09 the lon of 08:00:30 arrives again: its position is in Silver, so it
is a duplicate, not quarantined.

S2 (signals, unregistered): one soc 55 at 08:20:00.
"""

from __future__ import annotations

import math

from support.bronze_builder import DAY, MINUTE, SECOND, BronzeBuilder, ms

R = 6371.0088
STEP_KM = R * math.radians(0.001)  # 0.001 degree of latitude along a meridian

REGISTRY = {"V1": "scooter", "V2": "car", "S1": "ebike"}
H08, H09 = "2026-03-01T08", "2026-03-01T09"


def _loc(lat, lon=13.0):
    return {"lat": lat, "lon": lon, "alt_m": 30.0, "accuracy_m": 4.0}


def build(lake_root: str) -> None:
    """Write the scenario's Bronze and registry under ``lake_root``."""
    from lake_core.registry import upsert_vehicles

    upsert_vehicles(lake_root, list(REGISTRY), list(REGISTRY.values()), registered_at_ms=ms("00:00:00"))
    b = BronzeBuilder(lake_root)
    ride = {"in_use": True, "locked": False, "trip_id": "T1"}
    idle = {"in_use": False, "locked": True}

    def v1(event_id, at, ingest_delay_s=1, partition=0, **groups):
        t = ms(at)
        return b.snapshot("V1", event_id, t, t + ingest_delay_s * SECOND, partition=partition, **groups)

    v1(
        "e1",
        "08:00:00",
        location=_loc(52.000),
        battery={"soc_pct": 50.0, "charging": False},
        motion={"speed_kmh": 10.0},
        status=ride,
    )
    v1("e2", "08:00:10", location=_loc(52.001), battery={"soc_pct": 14.0, "charging": False}, status=ride)
    v1(
        "e1",
        "08:00:00",
        ingest_delay_s=5,
        location=_loc(52.000),
        battery={"soc_pct": 50.0, "charging": False},
        motion={"speed_kmh": 10.0},
        status=ride,
    )  # identical redelivery
    v1(
        "e3", "08:00:20", partition=1, location=_loc(52.002), battery={"soc_pct": 12.0, "charging": True}, status=ride
    )  # same ingest time as the copy below, higher partition: loses
    v1("e3", "08:00:20", partition=0, location=_loc(52.002), battery={"soc_pct": 11.0, "charging": True}, status=ride)
    v1("e4", "08:00:20", location=_loc(52.003), status=idle)
    v1("e5", "08:01:30", location=_loc(52.004), motion={"speed_kmh": 20.0}, status=ride)
    v1(
        "e5",
        "08:01:30",
        ingest_delay_s=20,
        location=_loc(52.004),
        motion={"speed_kmh": 20.0},
        battery={"soc_pct": 99.0},
        status=ride,
    )  # a differing copy, ingested later: loses
    v1("e6", "08:02:00", location=_loc(53.000), status=ride)
    v1("e7", "08:03:30", battery={"soc_pct": 80.0}, status=ride)
    v1("e8", "08:04:00", location=_loc(53.001), status=idle)

    # V2: skewed clocks, all ingested at 08:30:00.
    ingest = ms("08:30:00")
    for event_id, skew in (("k1", 10 * MINUTE), ("k2", -8 * DAY), ("k3", 5 * MINUTE), ("k4", -6 * DAY)):
        b.snapshot(
            "V2", event_id, ingest + skew, ingest, partition=2, location=_loc(48.0, 11.0), battery={"soc_pct": 70.0}
        )

    # V3: unregistered; every quarantine reason.
    t = ms("08:10:00")
    b.snapshot("V3", "v3a", t, t + SECOND, partition=3, location=_loc(52.1, 13.1), battery={"soc_pct": 60.0})
    bad = {
        "q1": {"location": _loc(95.0)},
        "q2": {"location": _loc(0.0, 0.0)},
        "q3": {"location": {"lat": 52.0}},
        "q4": {"location": _loc(52.1, 13.1), "battery": {"soc_pct": 120.0}},
        "q5": {"motion": {"speed_kmh": 301.0}},
        "q6": {"location": _loc(95.0), "battery": {"soc_pct": 120.0}},
    }
    for i, (event_id, groups) in enumerate(bad.items()):
        b.snapshot("V3", event_id, t + (i + 1) * SECOND, t + (i + 2) * SECOND, partition=3, **groups)

    # S1: signals.
    t0, t30, t40, t60 = ms("08:00:00"), ms("08:00:30"), ms("08:00:40"), ms("08:01:00")
    for name, kw in (
        ("lat", {"float_value": 52.5}),
        ("lon", {"float_value": 13.4}),
        ("speed", {"float_value": 12.0}),
        ("soc", {"int_value": 80}),
        ("ignition", {"int_value": 1}),
        ("charging", {"int_value": 0}),
        ("odometer", {"float_value": 100.5}),
        ("battery_temp", {"float_value": 20.0}),
    ):
        b.signal("S1", name, t0, t0 + 200, partition=4, **kw)
    b.signal("S1", "lat", t30, t30 + 200, partition=4, float_value=52.501)
    b.signal("S1", "lon", t30, t30 + 200, partition=4, float_value=13.4)
    b.signal("S1", "lat", t30, t30 + 900, partition=4, float_value=52.501)  # redelivered
    b.signal("S1", "speed", t30, t30 + 200, partition=4, float_value=14.0)
    b.signal("S1", "soc", t40, t40 + 200, partition=4, int_value=200)
    b.signal("S1", "lat", t60, t60 + 200, partition=4, float_value=52.502)

    # S2: unregistered signal vehicle.
    t = ms("08:20:00")
    b.signal("S2", "soc", t, t + 100, partition=5, float_value=55.0)

    # Hour 09.
    v1(
        "e2",
        "08:00:10",
        ingest_delay_s=3600,
        location=_loc(52.001),
        battery={"soc_pct": 14.0, "charging": False},
        status=ride,
    )
    v1("e8", "08:04:00", ingest_delay_s=3600, location=_loc(60.0), status=idle)
    v1("e9", "09:00:10", location=_loc(52.000), status=ride)
    v1("e10", "09:00:40", location=_loc(52.001), status=ride)
    b.signal("S1", "lon", t30, ms("09:05:00"), partition=4, float_value=13.4)  # redelivery of a paired half
    b.signal("S1", "lon", t60, ms("09:05:00"), partition=4, float_value=13.41)  # its lat was in hour 08
    b.write()

    # A payload Silver cannot parse, in a file of its own (as an older Bronze might hold).
    b.raw("[1, 2, 3]", "V3", ms("08:11:00"), ms("08:11:00"), partition=6)
    b.write()


# ---------------------------------------------------------------------------
# What Silver must hold after hours 08 and 09.
# ---------------------------------------------------------------------------
V1_EVENTS = ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10"]
S1_T0, S1_T30 = ms("08:00:00"), ms("08:00:30")
S1_EVENTS = [f"S1:{n}:{S1_T0}" for n in ("lat", "speed", "soc", "ignition", "charging", "odometer", "battery_temp")]
S1_EVENTS += [f"S1:lat:{S1_T30}", f"S1:speed:{S1_T30}"]
SILVER_KEYS = (
    {("V1", e) for e in V1_EVENTS}
    | {("V2", k) for k in ("k1", "k2", "k3", "k4")}
    | {("V3", "v3a")}
    | {("S1", e) for e in S1_EVENTS}
    | {("S2", f"S2:soc:{ms('08:20:00')}")}
)

QUARANTINE_08 = {
    ("q1", "invalid_gps"),
    ("q2", "invalid_gps"),
    ("q3", "invalid_gps"),
    ("q4", "invalid_soc"),
    ("q5", "invalid_speed"),
    ("q6", "invalid_gps"),
    (f"S1:soc:{ms('08:00:40')}", "invalid_soc"),
    (f"S1:lat:{ms('08:01:00')}", "invalid_gps"),
    (None, "malformed_payload"),
}
QUARANTINE_09 = {(f"S1:lon:{ms('08:01:00')}", "invalid_gps")}

# V2's event times after rule 1 (all ingested 08:30:00).
V2_TIMES = {
    "k1": (ms("08:30:00"), True),
    "k2": (ms("08:30:00"), True),
    "k3": (ms("08:35:00"), False),
    "k4": (ms("08:30:00") - 6 * DAY, False),
}

# ---------------------------------------------------------------------------
# Gold, day 2026-03-01.
# ---------------------------------------------------------------------------
V1_HOUR_08 = {
    "event_count": 8,
    "soc_avg": (50 + 14 + 11 + 80) / 4,
    "soc_min": 11.0,
    "soc_max": 80.0,
    "speed_avg": 15.0,
    "speed_max": 20.0,
    # legs e1-e2, e2-e3, e4-e5 and e6-e8 count; e3-e4 share a time, e5-e6 is too fast
    "distance_km": 4 * STEP_KM,
    # e1-e2 10 s, e2-e3 10 s, e3-e4 0 s, e5-e6 30 s, e7-e8 30 s (e4 idle; e6-e7 is 90 s)
    "usage_seconds": 80.0,
    "low_battery_events": 1,
    "first_event_ts": ms("08:00:00"),
    "last_event_ts": ms("08:04:00"),
    "vehicle_type": "scooter",
}
V1_HOUR_09 = {
    "event_count": 2,
    "distance_km": STEP_KM,
    "usage_seconds": 30.0,
    "low_battery_events": 0,
    "soc_avg": None,
    "speed_max": None,
}
S1_HOUR_08 = {
    "event_count": 9,
    "distance_km": STEP_KM,
    "usage_seconds": 0.0,
    "soc_avg": 80.0,
    "soc_min": 80.0,
    "speed_avg": 13.0,
    "speed_max": 14.0,
    "low_battery_events": 0,
    "vehicle_type": "ebike",
}
V2_HOUR_08 = {"event_count": 3, "vehicle_type": "car", "soc_avg": 70.0}  # k4 is on 2026-02-23
V3_HOUR_08 = {"event_count": 1, "vehicle_type": "unknown", "distance_km": 0.0}
DAY_ROWS = 10 + 3 + 1 + 9 + 1  # V1, V2 (without k4), V3, S1, S2

S1_STATE = {
    "lat": 52.501,
    "lon": 13.4,
    "speed_kmh": 14.0,
    "soc_pct": 80.0,
    "ignition": True,
    "charging": False,
    "odometer_km": 100.5,
    "battery_temp_c": 20.0,
    "in_use": None,
    "vehicle_type": "ebike",
    "last_event_ts": S1_T30,
}
V1_STATE = {
    "lat": 52.001,
    "soc_pct": 80.0,
    "charging": True,
    "in_use": True,
    "speed_kmh": 20.0,
    "trip_id": "T1",
    "last_event_ts": ms("09:00:40"),
}
