"""The Gold job in plain DuckDB SQL: the baseline of ``benchmarks.gold``.

``python -m benchmarks.gold_sql --lake-root R --date 2026-03-01 --out DIR``
reads the data files of Silver's ``event_date`` partition (listed from the
Delta log, as the job lists them), computes the three tables of contract
section 4 with the definitions of ``lake_schemas.rules`` (haversine legs
between consecutive positioned rows leaving out jumps over 250 km/h and
legs within one ``event_ts``, usage gaps after an in-use row up to 60 s,
the latest non-null value of every field) and writes them as Parquet under
``DIR/{vehicle_hourly,zone_hourly,vehicle_state}`` (the two hourly tables
partitioned by ``event_date``). It prints one JSON line with its counts.

Left out, fairly: the job folds the day into an existing ``vehicle_state``
with a MERGE; the benchmark starts from empty Gold tables, where that MERGE
only inserts, as this baseline does.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time

from benchmarks.duckdb_sql import connect, haversine_km_sql, quote
from lake_schemas import LakePaths
from lake_schemas.paths import HOUR_MS
from lake_schemas.rules import GOLD_ORDER, LOW_BATTERY_SOC_PCT, MAX_LEG_SPEED_KMH, MAX_USAGE_GAP_S
from lake_schemas.tables import (
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    MEASUREMENT_FIELDS,
)

__all__ = ["gold_sql", "silver_day_files", "run_baseline", "main"]

STATE_FIELDS = [f.name for f in MEASUREMENT_FIELDS] + ["zone_id"]
_ORDER = ", ".join("ts_ms" if c == "event_ts" else c for c in GOLD_ORDER)


def silver_day_files(lake_root: str, day: _dt.date) -> list:
    """Local paths of the data files of Silver's partition ``day``."""
    from deltalake import DeltaTable

    table = DeltaTable(LakePaths(lake_root).table("silver_telemetry"))
    uris = table.file_uris(file_pruning_predicate=[("event_date", "=", day.isoformat())])
    return sorted(u.removeprefix("file://") for u in uris)


def gold_sql(files: list, day: _dt.date) -> dict:
    """Statements: ``rows`` (a temp table of the day, ordered columns added), then the three tables' SELECTs."""
    file_list = ", ".join(quote(f) for f in files)
    ordered = f"PARTITION BY vehicle_id, hour_ms ORDER BY {_ORDER}"
    km = haversine_km_sql("prev_lat", "prev_lon", "lat", "lon")
    positioned = "lat IS NOT NULL AND lon IS NOT NULL AND NOT isnan(lat) AND NOT isnan(lon)"
    state = ",\n  ".join(f"arg_max({f}, row({_ORDER})) FILTER (WHERE {f} IS NOT NULL) AS {f}" for f in STATE_FIELDS)
    return {
        "rows": f"""
CREATE TEMP TABLE day_rows AS
SELECT *, epoch_ms(event_ts) AS ts_ms, epoch_ms(event_ts) - epoch_ms(event_ts) % {HOUR_MS} AS hour_ms
FROM read_parquet([{file_list}])""",
        "vehicle_hourly": f"""
WITH legs AS (  -- consecutive positioned rows of a vehicle-hour
  SELECT vehicle_id, hour_ms, ts_ms, lat, lon,
         lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon, lag(ts_ms) OVER w AS prev_ts
  FROM day_rows WHERE {positioned}
  WINDOW w AS ({ordered})
), distance AS (
  SELECT vehicle_id, hour_ms,
         sum(CASE WHEN ts_ms > prev_ts AND km / ((ts_ms - prev_ts) / {float(HOUR_MS)!r}) <= {MAX_LEG_SPEED_KMH!r}
                  THEN km ELSE 0.0 END) AS distance_km
  FROM (SELECT *, {km} AS km FROM legs WHERE prev_ts IS NOT NULL)
  GROUP BY vehicle_id, hour_ms
), gaps AS (  -- every row of a vehicle-hour and the gap to the next one
  SELECT vehicle_id, hour_ms, in_use, (lead(ts_ms) OVER w - ts_ms) / 1000.0 AS gap_s
  FROM day_rows WINDOW w AS ({ordered})
), usage AS (
  SELECT vehicle_id, hour_ms,
         sum(CASE WHEN coalesce(in_use, false) AND gap_s <= {MAX_USAGE_GAP_S!r} THEN gap_s ELSE 0.0 END)
           AS usage_seconds
  FROM gaps GROUP BY vehicle_id, hour_ms
), hourly AS (
  SELECT vehicle_id, hour_ms,
         arg_max(vehicle_type, row({_ORDER})) AS vehicle_type, count(*) AS event_count,
         avg(soc_pct) AS soc_avg, min(soc_pct) AS soc_min, max(soc_pct) AS soc_max,
         avg(speed_kmh) AS speed_avg, max(speed_kmh) AS speed_max,
         count(*) FILTER (WHERE soc_pct < {LOW_BATTERY_SOC_PCT!r} AND NOT coalesce(charging, false))
           AS low_battery_events,
         min(event_ts) AS first_event_ts, max(event_ts) AS last_event_ts
  FROM day_rows GROUP BY vehicle_id, hour_ms
)
SELECT h.vehicle_id, epoch_ms(h.hour_ms) AS hour_start, CAST(epoch_ms(h.hour_ms) AS DATE) AS event_date,
       h.vehicle_type, h.event_count, h.soc_avg, h.soc_min, h.soc_max, h.speed_avg, h.speed_max,
       coalesce(d.distance_km, 0.0) AS distance_km, u.usage_seconds, h.low_battery_events,
       h.first_event_ts, h.last_event_ts
FROM hourly h JOIN usage u USING (vehicle_id, hour_ms) LEFT JOIN distance d USING (vehicle_id, hour_ms)""",
        "zone_hourly": """
SELECT zone_id, epoch_ms(hour_ms) AS hour_start, CAST(epoch_ms(hour_ms) AS DATE) AS event_date,
       count(DISTINCT vehicle_id) AS active_vehicles, count(*) AS event_count, avg(soc_pct) AS soc_avg
FROM day_rows WHERE zone_id IS NOT NULL GROUP BY zone_id, hour_ms""",
        "vehicle_state": f"""
SELECT vehicle_id, arg_max(vehicle_type, row({_ORDER})) AS vehicle_type,
  {state},
  max(event_ts) AS last_event_ts, DATE '{day.isoformat()}' AS as_of_date
FROM day_rows GROUP BY vehicle_id""",
    }


_COLUMNS = {
    "vehicle_hourly": GOLD_VEHICLE_HOURLY_SCHEMA.names,
    "zone_hourly": GOLD_ZONE_HOURLY_SCHEMA.names,
    "vehicle_state": GOLD_VEHICLE_STATE_SCHEMA.names,
}


def run_baseline(lake_root: str, day: _dt.date, out_dir: str, threads: int = 0) -> dict:
    """Aggregate Silver's day ``day`` of ``lake_root`` into ``out_dir``; return counts."""
    files = silver_day_files(lake_root, day)
    os.makedirs(out_dir, exist_ok=True)
    con = connect(threads)
    statements = gold_sql(files, day)
    con.execute(statements.pop("rows"))
    counts = {"files": len(files), "silver_rows": con.sql("SELECT count(*) FROM day_rows").fetchall()[0][0]}
    for name, select in statements.items():
        target = quote(os.path.join(out_dir, name))
        columns = ", ".join(_COLUMNS[name])
        partitioned = (
            ", PARTITION_BY (event_date), WRITE_PARTITION_COLUMNS true, OVERWRITE_OR_IGNORE"
            if name != "vehicle_state"
            else ""
        )
        if not partitioned:
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
            target = quote(os.path.join(out_dir, name, "data.parquet"))
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT {columns} FROM ({select})")
        con.execute(f"COPY {name} TO {target} (FORMAT parquet, COMPRESSION zstd{partitioned})")
        counts[name] = con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake-root", required=True)
    ap.add_argument("--date", required=True, type=_dt.date.fromisoformat)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (default: all cores)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    counts = run_baseline(args.lake_root, args.date, args.out, args.threads)
    counts["seconds"] = time.perf_counter() - started
    print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())
