"""The Silver and Gold jobs in PySpark (``local[2]``): the peer of ``benchmarks.scale``.

The platform the lake replaces ran this step on Spark (AWS Glue); this is
what that step does on the same machine, written the way a Spark engineer
would: Spark SQL over the same files, the same rules as
``benchmarks.silver_sql`` / ``benchmarks.gold_sql`` (thresholds from
``lake_schemas.rules``), outputs in their layout so ``benchmarks.silver`` /
``benchmarks.gold``'s row-for-row checks compare them with the job's.

    python -m benchmarks.spark_jobs silver --lake-root R --hour 2026-03-01T08 --out DIR
    python -m benchmarks.spark_jobs gold --lake-root R --date 2026-03-01 --out DIR

Each prints one JSON line with its counts. Settings a Spark user would set
for one machine: ``local[2]`` (the machine's cores), 4 GB of driver memory,
8 shuffle partitions (not 200), UTC session time zone, Parquet timestamps in
milliseconds, no UI. The geohash is a vectorised pandas UDF calling
``lake_schemas.geohash`` (Spark has no geohash function; it is the only
Python in the plan). PySpark is in the ``bench`` extra, not in what the lake
installs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.gold_sql import silver_day_files
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.geohash import encode_arrow
from lake_schemas.messages import BOOLEAN_SIGNALS, SIGNAL_COLUMNS, SNAPSHOT_COLUMNS, SNAPSHOT_SCHEMA_VERSIONS
from lake_schemas.paths import HOUR_MS, parse_hour
from lake_schemas.rules import (
    EARTH_RADIUS_KM,
    GEOHASH_PRECISION,
    GOLD_ORDER,
    LAT_RANGE,
    LON_RANGE,
    LOW_BATTERY_SOC_PCT,
    MAX_FUTURE_SKEW_MS,
    MAX_LEG_SPEED_KMH,
    MAX_PAST_SKEW_MS,
    MAX_USAGE_GAP_S,
    POSITION_SIGNALS,
    SOC_RANGE,
    SPEED_RANGE,
    UNKNOWN_VEHICLE_TYPE,
    WINNER_ORDER,
    QuarantineReason,
)
from lake_schemas.tables import (
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    MEASUREMENT_FIELDS,
    QUARANTINE_SCHEMA,
    SILVER_SCHEMA,
)

__all__ = ["session", "run_silver", "run_gold", "main"]

_SPARK_TYPES = {"double": "DOUBLE", "bool": "BOOLEAN", "string": "STRING", "list<item: string>": "ARRAY<STRING>"}
_MEASUREMENTS = [f.name for f in MEASUREMENT_FIELDS]
_WINNER = ", ".join(f"{c} {'ASC' if d == 'ascending' else 'DESC'}" for c, d in WINNER_ORDER)
STATE_FIELDS = [f.name for f in MEASUREMENT_FIELDS] + ["zone_id"]


def _d(value: float) -> str:
    """A double literal (Spark reads ``1.5`` as a DECIMAL, whose division rounds)."""
    return f"{float(value)!r}D"


def _q(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"


def session():
    """A local[2] Spark session set up for one machine (see the module docstring)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master("local[2]")
        .appName("lake-bench")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MILLIS")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )


def _payload_ddl() -> str:
    """Both message shapes as one schema for ``from_json``."""
    types = {f.name: str(f.type) for f in MEASUREMENT_FIELDS}
    groups: dict = {}
    for (group, name), column in SNAPSHOT_COLUMNS.items():
        groups.setdefault(group, []).append(f"`{name}`: {_SPARK_TYPES[types[column]]}")
    fields = ["schema_version BIGINT", "event_id STRING", "vehicle_id STRING"]
    fields += [f"`{g}` STRUCT<{', '.join(members)}>" for g, members in groups.items()]
    fields += ["did STRING", "`timestamp` BIGINT", "name STRING", "float_value DOUBLE", "int_value BIGINT"]
    return ", ".join(fields)


def _outside(column: str, bounds: tuple) -> str:
    low, high = bounds
    return f"coalesce({column} < {_d(low)} OR {column} > {_d(high)} OR isnan({column}), false)"


def _measurement(column: str) -> str:
    snapshot = next((f"m.`{g}`.`{n}`" for (g, n), c in SNAPSHOT_COLUMNS.items() if c == column), "NULL")
    branches = [f"WHEN is_snapshot THEN {snapshot}"]
    for s in (s for s, c in SIGNAL_COLUMNS.items() if c == column):
        value = "(_value <> 0)" if s in BOOLEAN_SIGNALS else "_value"
        branches.append(f"WHEN is_signal AND m.name = {_q(s)} THEN {value}")
    return f"CASE {' '.join(branches)} END AS {column}"


def _silver_views(spark, files: list, registry, bronze_hour: str) -> None:
    """Temp views ``parsed`` ... ``cleaned``: every planned row with its ``reason`` and ``_rank``."""
    lat_s, lon_s = POSITION_SIGNALS
    signals = ", ".join(_q(s) for s in SIGNAL_COLUMNS)
    spark.read.parquet(*files).select("*", "_metadata.file_name").createOrReplaceTempView("bronze_raw")
    spark.createDataFrame(registry).createOrReplaceTempView("registry")
    measurements = ",\n  ".join(_measurement(c) for c in _MEASUREMENTS)
    spark.sql(f"""
SELECT *, NOT is_snapshot AND coalesce(m.name IN ({signals}), false) AND m.did IS NOT NULL AND _value IS NOT NULL
          AS is_signal
FROM (SELECT *, m IS NOT NULL AND m.event_id IS NOT NULL AS is_snapshot,
             CASE WHEN m.float_value IS NOT NULL AND NOT isnan(m.float_value) THEN m.float_value
                  ELSE CAST(m.int_value AS DOUBLE) END AS _value
      FROM (SELECT *, file_name AS bronze_file, from_json(payload, {_q(_payload_ddl())}) AS m FROM bronze_raw))
""").createOrReplaceTempView("typed")
    spark.sql(f"""
SELECT
  coalesce(CASE WHEN is_snapshot THEN m.vehicle_id ELSE m.did END, vehicle_id) AS vehicle_id,
  CASE WHEN is_snapshot THEN m.event_id
       WHEN is_signal THEN concat(m.did, ':', m.name, ':', CAST(m.`timestamp` AS STRING)) END AS event_id,
  coalesce(unix_millis(event_ts), CASE WHEN is_signal THEN m.`timestamp` END) AS raw_ms,
  unix_millis(ingest_ts) AS ingest_ms,
  CASE WHEN is_snapshot THEN 'snapshot' WHEN is_signal THEN 'signal' END AS source_shape,
  {measurements},
  CASE WHEN is_snapshot THEN CAST(coalesce(m.schema_version, {min(SNAPSHOT_SCHEMA_VERSIONS)}) AS INT) END
    AS schema_version,
  kafka_topic, kafka_partition, kafka_offset, ingest_ts,
  CASE WHEN is_signal THEN m.name END AS signal_name,
  NOT (is_snapshot OR is_signal) OR coalesce(unix_millis(event_ts), CASE WHEN is_signal THEN m.`timestamp` END)
    IS NULL AS malformed,
  payload, bronze_file
FROM typed""").createOrReplaceTempView("parsed")
    columns = [c for c in spark.table("parsed").columns if c != "signal_name"]
    plain = ", ".join(columns)
    spark.sql(f"""
SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY signal_name, vehicle_id, raw_ms ORDER BY {_WINNER}) AS _n
               FROM parsed WHERE signal_name IN ('{lat_s}', '{lon_s}'))
WHERE _n = 1""").createOrReplaceTempView("halves")
    spark.sql(f"SELECT {plain} FROM halves WHERE signal_name = '{lat_s}'").createOrReplaceTempView("lat_h")
    spark.sql(f"SELECT {plain} FROM halves WHERE signal_name = '{lon_s}'").createOrReplaceTempView("lon_h")
    paired = ", ".join("o.lon AS lon" if c == "lon" else f"a.{c}" for c in columns)
    lone_id = f"concat(vehicle_id, ':{lat_s}:', CAST(raw_ms AS STRING))"
    # A paired row's lon message, by its Kafka coordinates (lineage; null on every other row).
    no_pair = "CAST(NULL AS INT) AS paired_kafka_partition, CAST(NULL AS BIGINT) AS paired_kafka_offset"
    spark.sql(f"""
SELECT {plain}, CAST(NULL AS STRING) AS position_event_id, {no_pair} FROM parsed
WHERE signal_name IS NULL OR signal_name NOT IN ('{lat_s}', '{lon_s}')
UNION ALL
SELECT {paired}, CAST(NULL AS STRING) AS position_event_id,
       o.kafka_partition AS paired_kafka_partition, o.kafka_offset AS paired_kafka_offset
FROM lat_h a JOIN lon_h o ON a.vehicle_id = o.vehicle_id AND a.raw_ms = o.raw_ms
UNION ALL
SELECT {plain}, {lone_id} AS position_event_id, {no_pair} FROM (
  SELECT a.* FROM lat_h a LEFT ANTI JOIN lon_h o ON a.vehicle_id = o.vehicle_id AND a.raw_ms = o.raw_ms
  UNION ALL
  SELECT o.* FROM lon_h o LEFT ANTI JOIN lat_h a ON a.vehicle_id = o.vehicle_id AND a.raw_ms = o.raw_ms)
""").createOrReplaceTempView("planned")
    gps = (
        f"(lat IS NULL) <> (lon IS NULL) OR coalesce(lat = 0 AND lon = 0, false) OR "
        f"{_outside('lat', LAT_RANGE)} OR {_outside('lon', LON_RANGE)}"
    )
    skewed = f"coalesce(raw_ms - ingest_ms > {MAX_FUTURE_SKEW_MS} OR raw_ms - ingest_ms < -{MAX_PAST_SKEW_MS}, false)"
    spark.sql(f"""
SELECT *, CASE WHEN reason IS NULL THEN row_number() OVER (PARTITION BY reason IS NULL, vehicle_id, event_id
                                                          ORDER BY {_WINNER}) END AS _rank,
       CAST(event_ts AS DATE) AS event_date
FROM (SELECT *,
        timestamp_millis(CASE WHEN _skewed OR raw_ms IS NULL THEN ingest_ms ELSE raw_ms END) AS event_ts,
        _skewed OR raw_ms IS NULL AS ts_corrected,
        CASE WHEN _skewed THEN timestamp_millis(raw_ms) END AS sender_ts,
        CASE WHEN malformed THEN '{QuarantineReason.MALFORMED_PAYLOAD.value}'
             WHEN {gps} THEN '{QuarantineReason.INVALID_GPS.value}'
             WHEN {_outside("soc_pct", SOC_RANGE)} THEN '{QuarantineReason.INVALID_SOC.value}'
             WHEN {_outside("speed_kmh", SPEED_RANGE)} THEN '{QuarantineReason.INVALID_SPEED.value}' END AS reason
      FROM (SELECT *, {skewed} AS _skewed FROM planned))
""").createOrReplaceTempView("ruled")
    _register_geohash(spark)
    spark.sql(f"""
SELECT r.*, coalesce(v.vehicle_type, '{UNKNOWN_VEHICLE_TYPE}') AS vehicle_type,
       CASE WHEN reason IS NULL AND lat IS NOT NULL THEN lake_geohash(lat, lon) END AS zone_id,
       '{bronze_hour}' AS bronze_hour
FROM ruled r LEFT JOIN registry v ON r.vehicle_id = v.vehicle_id
""").createOrReplaceTempView("cleaned")


def _register_geohash(spark) -> None:
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")  # type: ignore[call-overload]  # the hints name the UDF's kind: Series -> Series
    def lake_geohash(lat: pd.Series, lon: pd.Series) -> pd.Series:
        la, lo = pa.array(lat, pa.float64(), from_pandas=True), pa.array(lon, pa.float64(), from_pandas=True)
        valid = pc.and_(la.is_valid(), lo.is_valid())
        return encode_arrow(la, lo, valid, GEOHASH_PRECISION).to_pandas()

    spark.udf.register("lake_geohash", lake_geohash)


def _write(df, directory: str, partitioned: bool = True) -> None:
    """Parquet under ``directory``, partitioned by ``event_date`` with the column kept in the files."""
    if partitioned:
        df.withColumn("p", df["event_date"]).write.mode("overwrite").partitionBy("p").parquet(directory)
    else:
        df.write.mode("overwrite").parquet(directory)


def run_silver(spark, lake_root: str, hour: str, out_dir: str) -> dict:
    paths = LakePaths(lake_root)
    hour_ms = int(parse_hour(hour).timestamp() * 1000)
    directory = paths.bronze_hour(hour_ms)
    files = sorted(f"{directory}/{n}" for n in os.listdir(directory) if n.endswith(".parquet"))
    registry = delta_dataset(paths.table("dims_vehicles")).to_table(columns=["vehicle_id", "vehicle_type"])
    _silver_views(spark, files, registry.to_pandas(), hour)
    cleaned = spark.table("cleaned").persist()
    silver = cleaned.where("_rank = 1").select(*SILVER_SCHEMA.names)
    quarantine = cleaned.where("reason IS NOT NULL").select(*QUARANTINE_SCHEMA.names, "position_event_id")
    _write(silver, os.path.join(out_dir, "silver"))
    _write(quarantine, os.path.join(out_dir, "quarantine"))
    counts = spark.sql("SELECT count_if(_rank = 1) AS s, count_if(reason IS NOT NULL) AS q FROM cleaned").collect()[0]
    cleaned.unpersist()
    return {"files": len(files), "silver_rows": counts["s"], "quarantine_rows": counts["q"]}


def _gold_statements(day: _dt.date) -> dict:
    order = ", ".join("ts_ms" if c == "event_ts" else c for c in GOLD_ORDER)
    ordered = f"PARTITION BY vehicle_id, hour_ms ORDER BY {order}"
    hour = _d(HOUR_MS)
    lat1, lon1, lat2, lon2 = "prev_lat", "prev_lon", "lat", "lon"
    a = (
        f"pow(sin((radians({lat2}) - radians({lat1})) / 2.0D), 2.0D) + cos(radians({lat1})) * cos(radians({lat2})) * "
        f"pow(sin(radians({lon2} - {lon1}) / 2.0D), 2.0D)"
    )
    km = f"(2.0D * {_d(EARTH_RADIUS_KM)} * asin(sqrt(least(greatest({a}, 0.0D), 1.0D))))"
    positioned = "lat IS NOT NULL AND lon IS NOT NULL AND NOT isnan(lat) AND NOT isnan(lon)"
    latest = f"struct({order})"
    state = ",\n  ".join(f"max_by({f}, {latest}) FILTER (WHERE {f} IS NOT NULL) AS {f}" for f in STATE_FIELDS)
    return {
        "vehicle_hourly": f"""
WITH legs AS (
  SELECT vehicle_id, hour_ms, ts_ms, lat, lon,
         lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon, lag(ts_ms) OVER w AS prev_ts
  FROM day_rows WHERE {positioned}
  WINDOW w AS ({ordered})
), distance AS (
  SELECT vehicle_id, hour_ms,
         sum(CASE WHEN ts_ms > prev_ts AND km / ((ts_ms - prev_ts) / {hour}) <= {_d(MAX_LEG_SPEED_KMH)}
                  THEN km ELSE 0.0D END) AS distance_km
  FROM (SELECT *, {km} AS km FROM legs WHERE prev_ts IS NOT NULL)
  GROUP BY vehicle_id, hour_ms
), gaps AS (
  SELECT vehicle_id, hour_ms, in_use, ((lead(ts_ms) OVER w) - ts_ms) / 1000.0D AS gap_s
  FROM day_rows WINDOW w AS ({ordered})
), usage AS (
  SELECT vehicle_id, hour_ms,
         sum(CASE WHEN coalesce(in_use, false) AND gap_s <= {_d(MAX_USAGE_GAP_S)} THEN gap_s ELSE 0.0D END)
           AS usage_seconds
  FROM gaps GROUP BY vehicle_id, hour_ms
), hourly AS (
  SELECT vehicle_id, hour_ms,
         max_by(vehicle_type, {latest}) AS vehicle_type, count(*) AS event_count,
         avg(soc_pct) AS soc_avg, min(soc_pct) AS soc_min, max(soc_pct) AS soc_max,
         avg(speed_kmh) AS speed_avg, max(speed_kmh) AS speed_max,
         count_if(soc_pct < {_d(LOW_BATTERY_SOC_PCT)} AND NOT coalesce(charging, false)) AS low_battery_events,
         min(event_ts) AS first_event_ts, max(event_ts) AS last_event_ts
  FROM day_rows GROUP BY vehicle_id, hour_ms
)
SELECT h.vehicle_id, timestamp_millis(h.hour_ms) AS hour_start, CAST(timestamp_millis(h.hour_ms) AS DATE) AS event_date,
       h.vehicle_type, h.event_count, h.soc_avg, h.soc_min, h.soc_max, h.speed_avg, h.speed_max,
       coalesce(d.distance_km, 0.0D) AS distance_km, u.usage_seconds, h.low_battery_events,
       h.first_event_ts, h.last_event_ts
FROM hourly h JOIN usage u ON h.vehicle_id = u.vehicle_id AND h.hour_ms = u.hour_ms
LEFT JOIN distance d ON h.vehicle_id = d.vehicle_id AND h.hour_ms = d.hour_ms""",
        "zone_hourly": """
SELECT zone_id, timestamp_millis(hour_ms) AS hour_start, CAST(timestamp_millis(hour_ms) AS DATE) AS event_date,
       count(DISTINCT vehicle_id) AS active_vehicles, count(*) AS event_count, avg(soc_pct) AS soc_avg
FROM day_rows WHERE zone_id IS NOT NULL GROUP BY zone_id, hour_ms""",
        "vehicle_state": f"""
SELECT vehicle_id, max_by(vehicle_type, {latest}) AS vehicle_type,
  {state},
  max(event_ts) AS last_event_ts, DATE '{day.isoformat()}' AS as_of_date
FROM day_rows GROUP BY vehicle_id""",
    }


_GOLD_COLUMNS = {
    "vehicle_hourly": GOLD_VEHICLE_HOURLY_SCHEMA.names,
    "zone_hourly": GOLD_ZONE_HOURLY_SCHEMA.names,
    "vehicle_state": GOLD_VEHICLE_STATE_SCHEMA.names,
}


def run_gold(spark, lake_root: str, day: _dt.date, out_dir: str) -> dict:
    files = silver_day_files(lake_root, day)
    rows = spark.read.parquet(*files)
    if "event_date" not in rows.columns:  # Delta leaves the partition column out of the files
        rows = rows.selectExpr("*", f"DATE '{day.isoformat()}' AS event_date")
    rows.selectExpr(
        "*", "unix_millis(event_ts) AS ts_ms", f"unix_millis(event_ts) - unix_millis(event_ts) % {HOUR_MS} AS hour_ms"
    ).persist().createOrReplaceTempView("day_rows")
    counts = {"files": len(files), "silver_rows": spark.table("day_rows").count()}
    for name, select in _gold_statements(day).items():
        table = spark.sql(select).select(*_GOLD_COLUMNS[name])
        _write(table, os.path.join(out_dir, name), partitioned=name != "vehicle_state")
        counts[name] = spark.read.parquet(os.path.join(out_dir, name)).count()
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", choices=["silver", "gold"])
    ap.add_argument("--lake-root", required=True)
    ap.add_argument("--hour", help="silver: the Bronze hour")
    ap.add_argument("--date", type=_dt.date.fromisoformat, help="gold: the Silver day")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if (args.job == "silver") != (args.hour is not None) or (args.job == "gold") != (args.date is not None):
        ap.error("silver takes --hour, gold takes --date")
    started = time.perf_counter()
    spark = session()
    try:
        if args.job == "silver":
            counts = run_silver(spark, args.lake_root, args.hour, args.out)
        else:
            counts = run_gold(spark, args.lake_root, args.date, args.out)
    finally:
        spark.stop()
    counts["seconds"] = time.perf_counter() - started
    print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())
