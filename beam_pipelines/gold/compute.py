"""Silver rows -> the Gold tables of contract section 4, on Arrow and numpy.

Each function takes Silver rows holding whole vehicles (a vehicle shard of
one day) and works on the rows sorted by vehicle, then ``GOLD_ORDER``. A
vehicle's hours are then contiguous runs, so every per-hour sum, minimum or
"last non-null" is one ``ufunc.reduceat`` over the runs: no Python loop per
vehicle or per row.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas.paths import HOUR_MS
from lake_schemas.rules import GOLD_ORDER, LOW_BATTERY_SOC_PCT, MAX_LEG_SPEED_KMH, MAX_USAGE_GAP_S, haversine_km
from lake_schemas.tables import (
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    MEASUREMENT_FIELDS,
    TS,
)

__all__ = [
    "GoldParts",
    "ZONE_PARTIAL_SCHEMA",
    "compute_gold",
    "vehicle_hourly",
    "zone_hourly_partial",
    "finish_zone_hourly",
    "vehicle_state",
    "combine_parts",
]

#: What each shard knows of a zone-hour; shards hold disjoint vehicles, so every column adds up.
ZONE_PARTIAL_SCHEMA = pa.schema(
    [
        pa.field("zone_id", pa.string()),
        pa.field("hour_start", TS),
        pa.field("event_date", pa.date32()),
        pa.field("active_vehicles", pa.int64()),
        pa.field("event_count", pa.int64()),
        pa.field("soc_sum", pa.float64()),
        pa.field("soc_n", pa.int64()),
    ]
)
#: The Silver fields ``vehicle_state`` carries the last non-null value of.
STATE_FIELDS = [f.name for f in MEASUREMENT_FIELDS] + ["zone_id"]


class GoldParts(NamedTuple):
    hourly: pa.Table  # GOLD_VEHICLE_HOURLY_SCHEMA
    zone_partial: pa.Table  # ZONE_PARTIAL_SCHEMA
    state: pa.Table  # GOLD_VEHICLE_STATE_SCHEMA
    silver_rows: int


def _sorted(rows: pa.Table) -> pa.Table:
    keys = [("vehicle_id", "ascending")] + [(c, "ascending") for c in GOLD_ORDER]
    return rows.take(pc.sort_indices(rows, sort_keys=keys))


def _codes(values: pa.ChunkedArray) -> np.ndarray:
    """Integer codes equal where ``values`` are equal (order-preserving is not needed)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.dictionary_encode(arr).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _f64(values: Any) -> np.ndarray:
    """A float column as numpy, NaN for null."""
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _bool(values: Any) -> np.ndarray:
    """A boolean column as numpy, null as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _ms(values: Any) -> np.ndarray:
    return pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal consecutive keys (rows must be sorted by them)."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def _nan_to_null(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=np.isnan(values))


def vehicle_hourly(rows: pa.Table) -> pa.Table:
    """``gold/vehicle_hourly`` rows of ``rows`` (Silver, whole vehicles)."""
    if rows.num_rows == 0:
        return GOLD_VEHICLE_HOURLY_SCHEMA.empty_table()
    return _vehicle_hourly_of_sorted(_sorted(rows))


def _vehicle_hourly_of_sorted(rows: pa.Table) -> pa.Table:
    n = rows.num_rows
    vehicle = _codes(rows["vehicle_id"])
    ts = _ms(rows["event_ts"])
    hour = ts - ts % HOUR_MS
    starts = _runs(vehicle, hour)
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
    groups = len(starts)
    last = np.append(starts[1:], n) - 1

    soc, speed = _f64(rows["soc_pct"]), _f64(rows["speed_kmh"])
    with np.errstate(invalid="ignore", divide="ignore"):
        soc_n = np.add.reduceat((~np.isnan(soc)).astype(np.int64), starts)
        speed_n = np.add.reduceat((~np.isnan(speed)).astype(np.int64), starts)
        soc_avg = np.add.reduceat(np.nan_to_num(soc), starts) / soc_n
        speed_avg = np.add.reduceat(np.nan_to_num(speed), starts) / speed_n
    soc_min, soc_max = np.fmin.reduceat(soc, starts), np.fmax.reduceat(soc, starts)
    speed_max = np.fmax.reduceat(speed, starts)

    # distance_km: legs between consecutive positioned rows of the same vehicle-hour.
    lat, lon = _f64(rows["lat"]), _f64(rows["lon"])
    pos = np.flatnonzero(~np.isnan(lat) & ~np.isnan(lon))
    a, b = pos[:-1], pos[1:]
    same = group[a] == group[b]
    a, b = a[same], b[same]
    km = haversine_km(lat[a], lon[a], lat[b], lon[b])
    hours = (ts[b] - ts[a]) / HOUR_MS
    with np.errstate(invalid="ignore", divide="ignore"):
        counted = (hours > 0) & (km / hours <= MAX_LEG_SPEED_KMH)
    distance = np.bincount(group[a], weights=np.where(counted, km, 0.0), minlength=groups)

    # usage_seconds: gaps after an in-use row, up to MAX_USAGE_GAP_S.
    in_use = _bool(rows["in_use"])
    i = np.arange(n - 1)
    gap_s = (ts[1:] - ts[:-1]) / 1000.0
    used = (group[1:] == group[:-1]) & in_use[:-1] & (gap_s <= MAX_USAGE_GAP_S)
    usage = np.bincount(group[i], weights=np.where(used, gap_s, 0.0), minlength=groups)

    low = (soc < LOW_BATTERY_SOC_PCT) & ~_bool(rows["charging"])  # NaN < 15 is False: no soc, no event
    low_events = np.add.reduceat(low.astype(np.int64), starts)

    first_idx = pa.array(starts)
    hour_start = pa.array(hour[starts], pa.int64()).cast(TS)
    table = pa.table(
        {
            "vehicle_id": rows["vehicle_id"].take(first_idx),
            "hour_start": hour_start,
            "event_date": pc.cast(hour_start, pa.date32()),
            "vehicle_type": rows["vehicle_type"].take(pa.array(last)),
            "event_count": pa.array(np.diff(np.append(starts, n)), pa.int64()),
            "soc_avg": _nan_to_null(soc_avg),
            "soc_min": _nan_to_null(soc_min),
            "soc_max": _nan_to_null(soc_max),
            "speed_avg": _nan_to_null(speed_avg),
            "speed_max": _nan_to_null(speed_max),
            "distance_km": pa.array(distance, pa.float64()),
            "usage_seconds": pa.array(usage, pa.float64()),
            "low_battery_events": pa.array(low_events, pa.int64()),
            "first_event_ts": rows["event_ts"].take(first_idx),
            "last_event_ts": rows["event_ts"].take(pa.array(last)),
        }
    )
    return table.cast(GOLD_VEHICLE_HOURLY_SCHEMA)


def zone_hourly_partial(rows: pa.Table) -> pa.Table:
    """Per (zone, hour) of rows that have a ``zone_id``: ``ZONE_PARTIAL_SCHEMA``."""
    zoned = rows.filter(pc.is_valid(rows["zone_id"]))
    if zoned.num_rows == 0:
        return ZONE_PARTIAL_SCHEMA.empty_table()
    hour_start = pc.floor_temporal(zoned["event_ts"], unit="hour")
    work = pa.table(
        {
            "zone_id": zoned["zone_id"],
            "hour_start": hour_start,
            "vehicle_id": zoned["vehicle_id"],
            "soc_pct": zoned["soc_pct"],
        }
    )
    agg = work.group_by(["zone_id", "hour_start"]).aggregate(
        [
            ("vehicle_id", "count_distinct"),
            ("vehicle_id", "count"),
            ("soc_pct", "sum"),
            ("soc_pct", "count"),
        ]
    )
    return pa.table(
        {
            "zone_id": agg["zone_id"],
            "hour_start": agg["hour_start"],
            "event_date": pc.cast(agg["hour_start"], pa.date32()),
            "active_vehicles": agg["vehicle_id_count_distinct"],
            "event_count": agg["vehicle_id_count"],
            "soc_sum": pc.fill_null(agg["soc_pct_sum"], 0.0),
            "soc_n": agg["soc_pct_count"],
        }
    ).cast(ZONE_PARTIAL_SCHEMA)


def finish_zone_hourly(partials: pa.Table) -> pa.Table:
    """Add up the shards' partials into ``gold/zone_hourly`` rows."""
    if partials.num_rows == 0:
        return GOLD_ZONE_HOURLY_SCHEMA.empty_table()
    agg = partials.group_by(["zone_id", "hour_start", "event_date"]).aggregate(
        [
            ("active_vehicles", "sum"),
            ("event_count", "sum"),
            ("soc_sum", "sum"),
            ("soc_n", "sum"),
        ]
    )
    soc_n = agg["soc_n_sum"]
    soc_avg = pc.if_else(
        pc.greater(soc_n, 0), pc.divide(agg["soc_sum_sum"], pc.cast(soc_n, pa.float64())), pa.scalar(None, pa.float64())
    )
    table = pa.table(
        {
            "zone_id": agg["zone_id"],
            "hour_start": agg["hour_start"],
            "event_date": agg["event_date"],
            "active_vehicles": agg["active_vehicles_sum"],
            "event_count": agg["event_count_sum"],
            "soc_avg": soc_avg,
        }
    )
    table = table.sort_by([("hour_start", "ascending"), ("zone_id", "ascending")])
    return table.cast(GOLD_ZONE_HOURLY_SCHEMA)


def vehicle_state(rows: pa.Table, as_of_date: _dt.date) -> pa.Table:
    """One row per vehicle: the last non-null value of every field in ``rows`` (as LATEST_BY_OFFSET)."""
    if rows.num_rows == 0:
        return GOLD_VEHICLE_STATE_SCHEMA.empty_table()
    return _vehicle_state_of_sorted(_sorted(rows), as_of_date)


def _vehicle_state_of_sorted(rows: pa.Table, as_of_date: _dt.date) -> pa.Table:
    n = rows.num_rows
    starts = _runs(_codes(rows["vehicle_id"]))
    last = np.append(starts[1:], n) - 1
    index = np.arange(n)
    columns = {
        "vehicle_id": rows["vehicle_id"].take(pa.array(starts)),
        "vehicle_type": rows["vehicle_type"].take(pa.array(last)),
    }
    for name in STATE_FIELDS:
        valid = pc.is_valid(rows[name]).to_numpy(zero_copy_only=False)
        latest = np.maximum.reduceat(np.where(valid, index, -1), starts)
        columns[name] = rows[name].take(pa.array(latest, pa.int64(), mask=latest < 0))
    columns["last_event_ts"] = rows["event_ts"].take(pa.array(last))
    columns["as_of_date"] = pa.repeat(pa.scalar(as_of_date, pa.date32()), len(starts))
    return pa.table({f.name: columns[f.name] for f in GOLD_VEHICLE_STATE_SCHEMA}).cast(GOLD_VEHICLE_STATE_SCHEMA)


def compute_gold(rows: pa.Table, day: _dt.date) -> GoldParts:
    """All three Gold outputs of one shard of Silver day ``day``."""
    if rows.num_rows == 0:
        return GoldParts(vehicle_hourly(rows), zone_hourly_partial(rows), vehicle_state(rows, day), 0)
    ordered = _sorted(rows)  # once for both: the sort is the costliest step of each
    return GoldParts(
        _vehicle_hourly_of_sorted(ordered),
        zone_hourly_partial(rows),
        _vehicle_state_of_sorted(ordered, day),
        rows.num_rows,
    )


def combine_parts(parts: Iterable[GoldParts]) -> GoldParts:
    parts = list(parts)
    if not parts:
        return GoldParts(
            GOLD_VEHICLE_HOURLY_SCHEMA.empty_table(),
            ZONE_PARTIAL_SCHEMA.empty_table(),
            GOLD_VEHICLE_STATE_SCHEMA.empty_table(),
            0,
        )
    hourly = pa.concat_tables([p.hourly for p in parts])
    hourly = hourly.sort_by([("vehicle_id", "ascending"), ("hour_start", "ascending")])
    state = pa.concat_tables([p.state for p in parts]).sort_by([("vehicle_id", "ascending")])
    return GoldParts(
        hourly, pa.concat_tables([p.zone_partial for p in parts]), state, sum(p.silver_rows for p in parts)
    )
