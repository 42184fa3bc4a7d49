"""A small lake for the DAG tests, written as the ingest would have (``BronzeBuilder``).

Bronze hours (the Kafka time files a row; each hour has its ``_COMPLETE``):

- ``2026-03-01T08`` (GOOD_HOUR): D1, D2, D3 (registered) each ride north for
  12 snapshots, 10 s apart, from 08:05: clean, passes every gate.
- ``2026-03-02T00`` (LATE_HOUR): D1's 12 snapshots of 2026-03-01 23:58-23:59,
  sent after midnight (late rows for day 2026-03-01), and 6 snapshots of D2
  on 2026-03-02.
- ``2026-03-03T05`` (BAD_HOUR): 10 snapshots of D3, 4 of them at latitude 95
  (``invalid_gps``): 40% quarantined, over the gate's 10%.

Every other hour of 2026-03-01 and 2026-03-02 has no data, and a later hour
is complete: those hours are empty for good.
"""

from __future__ import annotations

import datetime as dt

from support.bronze_builder import SECOND, BronzeBuilder, ms

GOOD_HOUR, LATE_HOUR, BAD_HOUR = "2026-03-01T08", "2026-03-02T00", "2026-03-03T05"
DAY = dt.date(2026, 3, 1)
VEHICLES = {"D1": "scooter", "D2": "ebike", "D3": "car"}
GOOD_ROWS = 3 * 12  # Silver rows of GOOD_HOUR, all on DAY
LATE_ROWS = 12  # Silver rows LATE_HOUR adds to DAY
BAD_ROWS, BAD_QUARANTINED = 10, 4


def _ride(
    b: BronzeBuilder,
    vehicle: str,
    partition: int,
    first_ms: int,
    count: int,
    ingest_delay_ms: int,
    lat0: float,
    bad_every: int = 0,
) -> None:
    for i in range(count):
        t = first_ms + i * 10 * SECOND
        lat = 95.0 if bad_every and i % bad_every == 0 else lat0 + 0.0005 * i
        b.snapshot(
            vehicle,
            f"{vehicle}-{t}",
            t,
            t + ingest_delay_ms,
            partition=partition,
            location={"lat": lat, "lon": 13.4, "alt_m": 35.0, "accuracy_m": 4.0},
            battery={"soc_pct": 90.0 - i, "charging": False},
            motion={"speed_kmh": 20.0},
            status={"in_use": True, "locked": False, "trip_id": f"T-{vehicle}"},
        )


def build(lake_root: str) -> None:
    from lake_core.registry import upsert_vehicles

    upsert_vehicles(lake_root, list(VEHICLES), list(VEHICLES.values()), registered_at_ms=ms("00:00:00"))
    b = BronzeBuilder(lake_root)
    for p, vehicle in enumerate(VEHICLES):
        _ride(b, vehicle, p, ms("08:05:00") + p * SECOND, 12, SECOND, 52.50 + p / 100)
    # Late: event times on 2026-03-01, Kafka times after midnight (2.5 min later: kept as sent).
    _ride(b, "D1", 0, ms("2026-03-01T23:58:00"), 12, 150 * SECOND, 52.60)
    _ride(b, "D2", 1, ms("2026-03-02T00:01:00"), 6, SECOND, 52.70)
    _ride(b, "D3", 2, ms("2026-03-03T05:10:00"), BAD_ROWS, SECOND, 52.80, bad_every=3)
    b.write()
