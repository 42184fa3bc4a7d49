"""Publish one Gold day: gate, replace the day in the hourly tables, fold it into the state.

- ``gold/vehicle_hourly`` and ``gold/zone_hourly``: day D's partition is
  replaced in one commit each (an overwrite whose predicate is the day), so
  readers see the old day or the new one, and a re-run writes the same rows.
- ``gold/vehicle_state``: a MERGE on ``vehicle_id``. Vehicles the day does
  not mention keep their row. For a vehicle it does: when the day is at
  least as recent as the state (the normal, in-order case), each field takes
  the day's last non-null value and keeps the state's where the day has
  none; when the day is older than the state (a backfill), the state keeps
  its values and only fills the fields it lacks. ``last_event_ts`` is the
  vehicle's latest event time and ``as_of_date`` the latest day folded into
  its row. Running a day again gives the same state.

The three tables are three commits (Delta has no multi-table transaction);
each retries a lost race, and a run stopped between them is completed by
running the day again.
"""

from __future__ import annotations

import datetime as _dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pyarrow as pa

from beam_pipelines.gold.compute import STATE_FIELDS, GoldParts, finish_zone_hourly
from lake_core import ledger
from lake_core.delta import check_existing, date_list_sql, open_table, with_commit_retries
from lake_schemas import LakePaths
from lake_schemas.tables import GOLD_VEHICLE_HOURLY_SCHEMA, GOLD_VEHICLE_STATE_SCHEMA, GOLD_ZONE_HOURLY_SCHEMA

__all__ = ["GoldCommit", "commit_day", "check_existing_tables", "GOLD_TABLES"]

PARTITION = "event_date"
#: SQL name -> (schema, partition columns, description)
GOLD_TABLES = {
    "gold_vehicle_hourly": (GOLD_VEHICLE_HOURLY_SCHEMA, [PARTITION], "per vehicle and UTC hour of event time"),
    "gold_zone_hourly": (GOLD_ZONE_HOURLY_SCHEMA, [PARTITION], "per geohash-6 zone and UTC hour of event time"),
    "gold_vehicle_state": (GOLD_VEHICLE_STATE_SCHEMA, None, "latest known value of every field per vehicle"),
}

#: ``gate(hourly, zone_hourly, state, silver_rows, day)`` raises ``QualityGateFailed`` to stop the commit.
Gate = Callable[[pa.Table, pa.Table, pa.Table, int, _dt.date], object]


@dataclass
class GoldCommit:
    day: _dt.date
    silver_rows: int
    vehicle_hours: int
    zone_hours: int
    vehicles: int  # vehicles of the day (rows merged into the state)
    state_inserted: int = 0
    state_updated: int = 0


def _open(lake_root: str, name: str) -> Any:
    schema, partition_by, description = GOLD_TABLES[name]
    return open_table(
        LakePaths(lake_root).table(name), schema, name, partition_by=partition_by, description=description
    )


def check_existing_tables(lake_root: str) -> None:
    """Refuse (``LakeDataError``) a Gold table of another schema, creating nothing."""
    for name, (schema, _, _) in GOLD_TABLES.items():
        check_existing(LakePaths(lake_root).table(name), schema, name)


def _replace_day(lake_root: str, name: str, rows: pa.Table, day: _dt.date) -> None:
    from deltalake import write_deltalake

    def replace() -> None:
        write_deltalake(
            _open(lake_root, name),
            rows,
            mode="overwrite",
            predicate=date_list_sql(PARTITION, [day]),
            partition_by=[PARTITION],
        )

    with_commit_retries(replace, f"replace {day} in {name}")


def _state_updates() -> dict:
    newer = "s.last_event_ts >= t.last_event_ts"
    updates = {
        f: f"CASE WHEN {newer} THEN coalesce(s.{f}, t.{f}) ELSE coalesce(t.{f}, s.{f}) END" for f in STATE_FIELDS
    }
    updates["vehicle_type"] = f"CASE WHEN {newer} THEN s.vehicle_type ELSE t.vehicle_type END"
    updates["last_event_ts"] = "greatest(s.last_event_ts, t.last_event_ts)"
    updates["as_of_date"] = "greatest(s.as_of_date, t.as_of_date)"
    return updates


def _merge_state(lake_root: str, state: pa.Table) -> tuple[int, int]:
    if state.num_rows == 0:
        return 0, 0

    def merge() -> tuple[int, int]:
        metrics = (
            _open(lake_root, "gold_vehicle_state")
            .merge(state, predicate="t.vehicle_id = s.vehicle_id", source_alias="s", target_alias="t")
            .when_matched_update(updates=_state_updates())
            .when_not_matched_insert_all()
            .execute()
        )
        return int(metrics.get("num_target_rows_inserted", 0)), int(metrics.get("num_target_rows_updated", 0))

    return with_commit_retries(merge, "MERGE into gold/vehicle_state")


def commit_day(lake_root: str, day: _dt.date, parts: GoldParts, gate: Optional[Gate] = None) -> GoldCommit:
    """Gate the day's Gold rows (all shards combined), then publish them; see the module docstring."""
    zone = finish_zone_hourly(parts.zone_partial)
    for name in GOLD_TABLES:
        _open(lake_root, name)  # an incompatible existing table fails here, before anything is written
    # The ledger's Silver half (the day's rows by hour, vehicle and partition) is counted on another
    # thread while the gate runs (locally in its own process: this one only waits): it cost Gold 5 to
    # 7 % when counted after the publish. Arrow's reads and group-bys release the GIL.
    with ThreadPoolExecutor(1, thread_name_prefix="ledger-count") as pool:
        silver_counts = pool.submit(ledger.silver_event_hour_counts, lake_root, day, False)
        if gate is not None:
            gate(parts.hourly, zone, parts.state, parts.silver_rows, day)
        _replace_day(lake_root, "gold_vehicle_hourly", parts.hourly, day)
        _replace_day(lake_root, "gold_zone_hourly", zone, day)
        inserted, updated = _merge_state(lake_root, parts.state)
        # The day's hours in _ledger/hours: Silver's rows, Gold's event_count.
        ledger.record_gold_day(lake_root, day, silver_counts.result())
    return GoldCommit(
        day, parts.silver_rows, parts.hourly.num_rows, zone.num_rows, parts.state.num_rows, inserted, updated
    )
