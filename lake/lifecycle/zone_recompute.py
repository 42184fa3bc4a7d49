"""``gold/zone_hourly`` rows recomputed from Silver, for the hours one vehicle was active in.

A zone-hour is an aggregate over vehicles, but one with a single vehicle
shows where that vehicle was, and every other one counts it; so erasing a
vehicle recomputes the zone rows of each hour it had events in, from Silver
without it (with Gold's own functions), and replaces exactly those hours in
one commit per day. A zone-hour the vehicle was alone in disappears. Days
Gold never computed stay uncomputed.
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from beam_pipelines.gold.compute import finish_zone_hourly, zone_hourly_partial
from lake.lifecycle.delta_maintenance import delta_errors
from lake.lifecycle.vehicle_rows import plain_strings, row_filter
from lake_core.delta import with_commit_retries
from lake_core.storage import delta_dataset, filesystem, fs_path
from lake_schemas import LakePaths
from lake_schemas.paths import HOUR_MS
from lake_schemas.tables import GOLD_ZONE_HOURLY_SCHEMA

__all__ = ["vehicle_rows", "vehicle_hours", "recompute_zone_hours"]

PARTITION = "event_date"


def vehicle_rows(lake_root: str, table: str, vehicle_id: str, columns: list) -> pa.Table:
    """``columns`` of the vehicle's rows in Delta table ``table`` (empty when it has none or no table).

    Only files whose statistics may hold the vehicle are read (``vehicle_id``
    is never null in the tables this is used on), and filtered in memory.
    """
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table(table)
    if not DeltaTable.is_deltatable(path):
        return pa.table({c: [] for c in columns})
    fs, _ = filesystem(lake_root)
    uris = DeltaTable(path).file_uris(file_pruning_predicate=f"vehicle_id = '{vehicle_id}'")
    wanted = sorted(set(columns) | {"vehicle_id"})
    parts = [pq.read_table(fs_path(lake_root, uri), columns=wanted, filesystem=fs) for uri in uris]
    if not parts:
        return pa.table({c: [] for c in columns})
    rows = pa.concat_tables([plain_strings(p) for p in parts], promote_options="permissive")
    return rows.filter(row_filter(vehicle_id, rows.column_names)).select(columns)


def _epoch_ms(column) -> pa.Array:
    """Timestamps as epoch ms, whatever their unit (deltalake's files hold microseconds)."""
    return pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC")), pa.int64())


def vehicle_hours(lake_root: str, vehicle_id: str) -> set:
    """Starts (epoch ms) of the UTC hours the vehicle has rows in, in Silver or in ``gold/vehicle_hourly``.

    Gold is asked too so that a forget stopped after Silver was erased
    still finds the hours when run again.
    """
    hours = set()
    silver = vehicle_rows(lake_root, "silver_telemetry", vehicle_id, ["event_ts"])
    gold = vehicle_rows(lake_root, "gold_vehicle_hourly", vehicle_id, ["hour_start"])
    for column in (silver.column(0), gold.column(0)):
        if len(column):
            ms = _epoch_ms(column).to_numpy(zero_copy_only=False)
            hours.update(int(m - m % HOUR_MS) for m in ms)
    return hours


def _gold_days(path: str) -> set:
    from deltalake import DeltaTable

    return {_dt.date.fromisoformat(p[PARTITION]) for p in DeltaTable(path).partitions() if p.get(PARTITION)}


def _silver_rows(lake_root: str, day: _dt.date, hours: set, vehicle_id: str) -> pa.Table:
    path = LakePaths(lake_root).table("silver_telemetry")
    rows = plain_strings(
        delta_dataset(path).to_table(
            columns=["zone_id", "event_ts", "vehicle_id", "soc_pct"],
            filter=ds.field(PARTITION) == pa.scalar(day, pa.date32()),
        )
    )
    hour = _epoch_ms(pc.floor_temporal(rows["event_ts"], unit="hour"))
    keep = pc.and_(
        pc.is_in(hour, value_set=pa.array(sorted(hours), pa.int64())),
        pc.invert(pc.fill_null(pc.equal(rows["vehicle_id"], vehicle_id), False)),
    )
    return rows.filter(keep)


def _iso(hour_ms: int) -> str:
    return _dt.datetime.fromtimestamp(hour_ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def recompute_zone_hours(lake_root: str, hours: set, vehicle_id: str, dry_run: bool) -> dict:
    """Replace ``gold/zone_hourly``'s rows of ``hours`` by their recomputation from Silver without the vehicle.

    Returns ``{"hours": n, "rows_before": n, "rows_after": n}``; with
    ``dry_run`` nothing is written (``rows_after`` is what would be).
    """
    from deltalake import DeltaTable, write_deltalake

    paths = LakePaths(lake_root)
    zone_path = paths.table("gold_zone_hourly")
    outcome = {"hours": 0, "rows_before": 0, "rows_after": 0}
    if (
        not hours
        or not DeltaTable.is_deltatable(zone_path)
        or not DeltaTable.is_deltatable(paths.table("silver_telemetry"))
    ):
        return outcome
    by_day = defaultdict(set)
    for hour in hours:
        by_day[_dt.datetime.fromtimestamp(hour / 1000, _dt.timezone.utc).date()].add(hour)
    computed = _gold_days(zone_path)
    for day, day_hours in sorted(by_day.items()):
        if day not in computed:
            continue
        rows = finish_zone_hourly(zone_hourly_partial(_silver_rows(lake_root, day, day_hours, vehicle_id)))
        rows = rows.cast(GOLD_ZONE_HOURLY_SCHEMA)
        predicate = (
            f"{PARTITION} = DATE '{day.isoformat()}' AND hour_start IN ("
            + ", ".join(f"'{_iso(h)}'" for h in sorted(day_hours))
            + ")"
        )
        before = delta_dataset(zone_path).to_table(
            columns=["hour_start"], filter=ds.field(PARTITION) == pa.scalar(day, pa.date32())
        )
        before_ms = _epoch_ms(before["hour_start"])
        replaced = pc.is_in(before_ms, value_set=pa.array(sorted(day_hours), pa.int64()))
        outcome["rows_before"] += pc.sum(pc.cast(replaced, pa.int64())).as_py() or 0
        outcome["rows_after"] += rows.num_rows
        outcome["hours"] += len(day_hours)
        if dry_run:
            continue

        def replace(rows=rows, predicate=predicate) -> None:
            write_deltalake(
                DeltaTable(zone_path), rows, mode="overwrite", predicate=predicate, partition_by=[PARTITION]
            )

        with delta_errors(f"recompute {day} hours in {zone_path}"):
            with_commit_retries(replace, f"recompute {day} hours in gold/zone_hourly")
    return outcome
