"""One vehicle's events from Silver (contract section 3) as a series, for ranges older than the hot store.

Silver is partitioned by ``event_date``: deltalake names the current files
of the days the range touches, DuckDB reads only those (its own Parquet
reader, as ``lake.query`` does, for the same reason) with the vehicle and
the range pushed down. When the range holds more events than the answer may
have, DuckDB pre-selects each time bucket's candidates (first, last, lowest
and highest battery, top speed: ``downsample``'s rule, with the same bucket
edges), so 90 days of a vehicle at 1 Hz never travel into Python.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from lake.read_api.downsample import Series, buckets_for, empty_series
from lake_schemas import LakePaths

__all__ = ["silver_series"]

_MS_PER_DAY = 86_400_000


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date().isoformat()


def _files(lake_root: str, start_ms: int, end_ms: int) -> list[str]:
    from deltalake import DeltaTable  # noqa: PLC0415 - deltalake is heavy; `lake --help` stays light
    from deltalake.exceptions import TableNotFoundError  # noqa: PLC0415

    try:
        table = DeltaTable(LakePaths(lake_root).table("silver_telemetry"))
    except TableNotFoundError:
        return []
    # A corrected clock puts an event on its ingest day, so the range's days are the right partitions.
    filters = [("event_date", ">=", _day(start_ms)), ("event_date", "<=", _day(end_ms - 1))]
    return list(table.file_uris(partition_filters=filters))


def _series(columns: dict) -> Series:
    t = np.asarray(columns["t"], dtype=np.int64)
    soc = np.asarray(columns["soc"], dtype=np.float64)
    speed = np.asarray(columns["speed"], dtype=np.float64)
    return {
        "t": t,
        "n": np.ones(len(t), dtype=np.int64),
        "soc_min": soc,
        "soc_avg": soc,
        "soc_max": soc,
        "speed_avg": speed,
        "speed_max": speed,
    }


def silver_series(lake_root: str, vehicle_id: str, start_ms: int, end_ms: int, max_points: int) -> tuple[Series, int]:
    """(the vehicle's Silver events in ``[start_ms, end_ms)``, ordered by ``event_ts``, ``event_id``; how
    many there are): when more than ``max_points``, only each bucket's candidates (``downsample`` picks
    among them)."""
    files = _files(lake_root, start_ms, end_ms)
    if not files:
        return empty_series(), 0
    import duckdb  # noqa: PLC0415 - heavy; only the telemetry endpoint needs it

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = (
            "WITH r AS (SELECT epoch_ms(event_ts) AS t, event_id, soc_pct AS soc, speed_kmh AS speed "
            "FROM read_parquet($files, union_by_name = true) WHERE vehicle_id = $vehicle "
            "AND event_ts >= make_timestamp($start * 1000) AND event_ts < make_timestamp($end * 1000)) "
        )
        where = {"files": files, "vehicle": vehicle_id, "start": start_ms, "end": end_ms}
        # One scan: each bucket's candidates and how many events it holds. Only a range with no more
        # events than the answer may have is read again, whole (a small one, by definition).
        buckets = buckets_for(max_points)
        candidates = con.execute(
            rows + ", b AS (SELECT least(greatest((t - $start) * $k // $span, 0), $k - 1) AS b, "
            "{'t': t, 'soc': soc, 'speed': speed} AS p, t, soc, speed FROM r), "
            "c AS MATERIALIZED (SELECT count(*) AS n, "
            "[arg_min(p, t), arg_max(p, t), arg_min(p, soc), arg_max(p, soc), arg_max(p, speed)] AS ps "
            "FROM b GROUP BY b) "
            "SELECT DISTINCT p.t AS t, p.soc AS soc, p.speed AS speed, (SELECT sum(n) FROM c) AS total "
            "FROM (SELECT unnest(ps) AS p FROM c) WHERE p IS NOT NULL ORDER BY t",
            {**where, "k": buckets, "span": max(1, end_ms - start_ms)},
        ).fetchnumpy()
        count = int(candidates["total"][0]) if len(candidates["total"]) else 0
        if count <= max_points:
            raw = con.execute(rows + "SELECT t, soc, speed FROM r ORDER BY t, event_id", where).fetchnumpy()
            return _series(raw), count
        return _series(candidates), count
    finally:
        con.close()
