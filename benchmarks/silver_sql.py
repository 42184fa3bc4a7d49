"""The Silver job in plain DuckDB SQL: the baseline of ``benchmarks.silver``.

``python -m benchmarks.silver_sql --lake-root R --hour 2026-03-01T08 --out DIR``
reads the Bronze hour's Parquet files and the registry, applies the
contract's Silver rules as ``beam_pipelines.silver`` does (pair lat+lon
signals, rule 1 server-side time, rule 2 quarantine reasons in order, rule 3
first ingested wins, ``zone_id`` geohash 6, ``vehicle_type``) and writes
``DIR/silver/event_date=.../*.parquet`` and ``DIR/quarantine/...``
(Parquet partitioned by ``event_date``, as the Delta tables are). It prints
one JSON line with its counts.

What it leaves out, and why that is fair: the job's MERGE deduplicates
against rows already in Silver and its commit is transactional; the
benchmark starts from an empty Silver, where that check finds nothing. A
payload Arrow cannot parse (impossible in Bronze our ingest wrote) is
handled by ``TRY`` here, row by row there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks.duckdb_sql import connect, geohash_stages, quote
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.messages import BOOLEAN_SIGNALS, SIGNAL_COLUMNS, SNAPSHOT_COLUMNS, SNAPSHOT_SCHEMA_VERSIONS
from lake_schemas.paths import parse_hour
from lake_schemas.rules import (
    GEOHASH_PRECISION,
    LAT_RANGE,
    LON_RANGE,
    MAX_FUTURE_SKEW_MS,
    MAX_PAST_SKEW_MS,
    POSITION_SIGNALS,
    SOC_RANGE,
    SPEED_RANGE,
    UNKNOWN_VEHICLE_TYPE,
    WINNER_ORDER,
    QuarantineReason,
)
from lake_schemas.tables import MEASUREMENT_FIELDS, QUARANTINE_SCHEMA, SILVER_SCHEMA

__all__ = ["run_baseline", "cleaned_sql", "main"]

_SQL_TYPES = {"double": "DOUBLE", "bool": "BOOLEAN", "string": "VARCHAR", "list<item: string>": "VARCHAR[]"}
_MEASUREMENTS = [f.name for f in MEASUREMENT_FIELDS]
_WINNER = ", ".join(f"{c} {'ASC' if d == 'ascending' else 'DESC'}" for c, d in WINNER_ORDER)


def _json_structure() -> str:
    """The payload's JSON shape (both message shapes in one), for ``from_json``."""
    types = {f.name: str(f.type) for f in MEASUREMENT_FIELDS}
    groups: dict = {}
    for (group, name), column in SNAPSHOT_COLUMNS.items():
        sql_type = _SQL_TYPES[types[column]]
        groups.setdefault(group, {})[name] = [sql_type[:-2]] if sql_type.endswith("[]") else sql_type
    shape = {
        "schema_version": "BIGINT",
        "event_id": "VARCHAR",
        "vehicle_id": "VARCHAR",
        **groups,
        "did": "VARCHAR",
        "timestamp": "BIGINT",
        "name": "VARCHAR",
        "float_value": "DOUBLE",
        "int_value": "BIGINT",
    }
    return json.dumps(shape)


def _outside(column: str, bounds: tuple) -> str:
    low, high = bounds
    return f"coalesce({column} < {low!r} OR {column} > {high!r} OR isnan({column}), false)"


def _measurement(column: str) -> str:
    """A Silver measurement column of a parsed row: the snapshot's field, or the value of its signal."""
    snapshot = next((f"m.{g}.{n}" for (g, n), c in SNAPSHOT_COLUMNS.items() if c == column), "NULL")
    signals = [s for s, c in SIGNAL_COLUMNS.items() if c == column]
    branches = [f"WHEN is_snapshot THEN {snapshot}"]
    for s in signals:
        value = "(_value <> 0)" if s in BOOLEAN_SIGNALS else "_value"
        branches.append(f"WHEN is_signal AND m.name = {quote(s)} THEN {value}")
    return f"CASE {' '.join(branches)} END AS {column}"


def cleaned_sql(files: list, bronze_hour: str) -> str:
    """One query: every planned row of the hour with its ``reason`` (null: passes) and ``_rank`` (1: the winner)."""
    lat_s, lon_s = POSITION_SIGNALS
    signal_names = ", ".join(quote(s) for s in SIGNAL_COLUMNS)
    file_list = ", ".join(quote(f) for f in files)
    measurements = ",\n  ".join(_measurement(c) for c in _MEASUREMENTS)
    gps = (
        f"(lat IS NULL) <> (lon IS NULL) OR coalesce(lat = 0 AND lon = 0, false) OR "
        f"{_outside('lat', LAT_RANGE)} OR {_outside('lon', LON_RANGE)}"
    )
    gh_cells, gh_fixed, gh_chars = geohash_stages("lat", "lon", GEOHASH_PRECISION, "reason IS NULL AND lat IS NOT NULL")
    return f"""
WITH bronze AS (
  SELECT *, parse_filename(filename) AS bronze_file, try(from_json(payload, '{_json_structure()}')) AS m
  FROM read_parquet([{file_list}], filename = true)
), shaped AS (
  SELECT *, m IS NOT NULL AND m.event_id IS NOT NULL AS is_snapshot,
         CASE WHEN m.float_value IS NOT NULL AND NOT isnan(m.float_value) THEN m.float_value
              ELSE CAST(m.int_value AS DOUBLE) END AS _value
  FROM bronze
), typed AS (
  SELECT *, NOT is_snapshot AND coalesce(m.name IN ({signal_names}), false) AND m.did IS NOT NULL
            AND _value IS NOT NULL AS is_signal
  FROM shaped
), parsed AS (
  SELECT
    coalesce(CASE WHEN is_snapshot THEN m.vehicle_id ELSE m.did END, vehicle_id) AS vehicle_id,
    CASE WHEN is_snapshot THEN m.event_id
         WHEN is_signal THEN m.did || ':' || m.name || ':' || CAST(m.timestamp AS VARCHAR) END AS event_id,
    coalesce(epoch_ms(event_ts), CASE WHEN is_signal THEN m.timestamp END) AS raw_ms,
    epoch_ms(ingest_ts) AS ingest_ms,
    CASE WHEN is_snapshot THEN 'snapshot' WHEN is_signal THEN 'signal' END AS source_shape,
    {measurements},
    CASE WHEN is_snapshot THEN CAST(coalesce(m.schema_version, {min(SNAPSHOT_SCHEMA_VERSIONS)}) AS INTEGER)
         END AS schema_version,
    kafka_topic, kafka_partition, kafka_offset, ingest_ts,
    CASE WHEN is_signal THEN m.name END AS signal_name,
    NOT (is_snapshot OR is_signal) OR coalesce(epoch_ms(event_ts), CASE WHEN is_signal THEN m.timestamp END)
      IS NULL AS malformed,
    payload, bronze_file
  FROM typed
), halves AS (  -- a redelivered half is a duplicate: first ingested wins per vehicle, time and coordinate
  SELECT * FROM parsed WHERE signal_name IN ('{lat_s}', '{lon_s}')
  QUALIFY row_number() OVER (PARTITION BY signal_name, vehicle_id, raw_ms ORDER BY {_WINNER}) = 1
), lat_h AS (SELECT * EXCLUDE (signal_name) FROM halves WHERE signal_name = '{lat_s}'
), lon_h AS (SELECT * EXCLUDE (signal_name) FROM halves WHERE signal_name = '{lon_s}'
), planned AS (  -- a lat and a lon of one vehicle and time become one position row: the lat's, with its lon
  SELECT * EXCLUDE (signal_name), NULL::VARCHAR AS position_event_id FROM parsed
  WHERE signal_name IS NULL OR signal_name NOT IN ('{lat_s}', '{lon_s}')
  UNION ALL BY NAME
  SELECT a.* REPLACE (o.lon AS lon), NULL::VARCHAR AS position_event_id,
         o.kafka_partition AS paired_kafka_partition, o.kafka_offset AS paired_kafka_offset
  FROM lat_h a JOIN lon_h o ON a.vehicle_id = o.vehicle_id AND a.raw_ms = o.raw_ms
  UNION ALL BY NAME
  SELECT *, vehicle_id || ':{lat_s}:' || CAST(raw_ms AS VARCHAR) AS position_event_id FROM (
    SELECT * FROM lat_h a
    WHERE NOT EXISTS (SELECT 1 FROM lon_h o WHERE o.vehicle_id = a.vehicle_id AND o.raw_ms = a.raw_ms)
    UNION ALL
    SELECT * FROM lon_h o
    WHERE NOT EXISTS (SELECT 1 FROM lat_h a WHERE o.vehicle_id = a.vehicle_id AND o.raw_ms = a.raw_ms))
), timed AS (  -- rule 1
  SELECT *, coalesce(raw_ms - ingest_ms > {MAX_FUTURE_SKEW_MS} OR raw_ms - ingest_ms < -{MAX_PAST_SKEW_MS},
                     false) AS _skewed
  FROM planned
), ruled AS (  -- rule 2, in the contract's order
  SELECT * EXCLUDE (_skewed, raw_ms),
    epoch_ms(CASE WHEN _skewed OR raw_ms IS NULL THEN ingest_ms ELSE raw_ms END) AS event_ts,
    _skewed OR raw_ms IS NULL AS ts_corrected,
    CASE WHEN _skewed THEN epoch_ms(raw_ms) END AS sender_ts,
    CASE WHEN malformed THEN '{QuarantineReason.MALFORMED_PAYLOAD.value}'
         WHEN {gps} THEN '{QuarantineReason.INVALID_GPS.value}'
         WHEN {_outside("soc_pct", SOC_RANGE)} THEN '{QuarantineReason.INVALID_SOC.value}'
         WHEN {_outside("speed_kmh", SPEED_RANGE)} THEN '{QuarantineReason.INVALID_SPEED.value}' END AS reason
  FROM timed
), ranked AS (  -- rule 3 within the hour, among rows that pass
  SELECT *, CAST(event_ts AS DATE) AS event_date,
    CASE WHEN reason IS NULL THEN row_number() OVER (PARTITION BY reason IS NULL, vehicle_id, event_id
                                                     ORDER BY {_WINNER}) END AS _rank
  FROM ruled
), enriched AS (
  SELECT r.*, coalesce(v.vehicle_type, '{UNKNOWN_VEHICLE_TYPE}') AS vehicle_type, {gh_cells}
  FROM ranked r LEFT JOIN registry v USING (vehicle_id)
)
SELECT * EXCLUDE (_gx, _gy), {gh_chars}, '{bronze_hour}' AS bronze_hour
FROM (SELECT * REPLACE ({gh_fixed}) FROM enriched)
"""


def _copy(con, select: str, directory: str) -> None:
    con.execute(
        f"COPY ({select}) TO {quote(directory)} (FORMAT parquet, COMPRESSION zstd, "
        f"PARTITION_BY (event_date), WRITE_PARTITION_COLUMNS true, OVERWRITE_OR_IGNORE)"
    )


def run_baseline(lake_root: str, hour: str, out_dir: str, threads: int = 0) -> dict:
    """Clean the Bronze hour ``hour`` of ``lake_root`` into ``out_dir``; return counts."""
    paths = LakePaths(lake_root)
    hour_ms = int(parse_hour(hour).timestamp() * 1000)
    directory = paths.bronze_hour(hour_ms)
    files = sorted(f"{directory}/{n}" for n in os.listdir(directory) if n.endswith(".parquet"))
    os.makedirs(out_dir, exist_ok=True)
    con = connect(threads)
    registry = delta_dataset(paths.table("dims_vehicles")).to_table(columns=["vehicle_id", "vehicle_type"])
    con.register("registry", registry)
    query = cleaned_sql(files, hour)
    con.execute(f"CREATE TEMP TABLE cleaned AS {query}")
    silver = ", ".join(SILVER_SCHEMA.names)
    quarantine = ", ".join(QUARANTINE_SCHEMA.names)
    _copy(con, f"SELECT {silver} FROM cleaned WHERE _rank = 1", os.path.join(out_dir, "silver"))
    _copy(
        con,
        f"SELECT {quarantine}, position_event_id FROM cleaned WHERE reason IS NOT NULL",
        os.path.join(out_dir, "quarantine"),
    )
    counts = con.sql(
        "SELECT count(*) FILTER (WHERE _rank = 1), count(*) FILTER (WHERE reason IS NOT NULL) FROM cleaned"
    ).fetchall()[0]
    return {"files": len(files), "silver_rows": counts[0], "quarantine_rows": counts[1]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake-root", required=True)
    ap.add_argument("--hour", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (default: all cores)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    counts = run_baseline(args.lake_root, args.hour, args.out, args.threads)
    counts["seconds"] = time.perf_counter() - started
    print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())
