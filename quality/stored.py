"""Gates on what a layer holds as stored: a Bronze hour, a Silver day, a Gold day.

The Silver and Gold jobs gate each batch before they publish it
(``quality.gates``); these functions validate data already in the lake, for
``lake validate`` and the DAGs' Bronze gate. Each returns the ``GateResult``
or raises ``QualityGateFailed`` naming the failed rules, and raises
``LakeDataError`` when there is nothing to validate.

Bronze is read through its one reader, ``lake_core.bronze``; ``quality`` never
imports the pipelines.
"""

from __future__ import annotations

import datetime as _dt

import pyarrow as pa

from lake_core.bronze.hour_files import list_bronze_hour, read_bronze_file
from lake_core.errors import LakeDataError
from lake_core.storage import delta_dataset
from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.tables import (
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    SILVER_SCHEMA,
)
from quality.gates import STORED, BronzeGate, GoldGate, enforce
from quality.results import Batch
from quality.worker import run_suites

__all__ = ["validate_bronze_hour", "validate_silver_day", "validate_gold_day", "read_day"]


def validate_bronze_hour(lake_root: str, hour_ms: int):
    """The Bronze hour starting at ``hour_ms`` as stored."""
    listing = list_bronze_hour(lake_root, hour_ms)
    parts = [_with_generation(read_bronze_file(lake_root, f"{listing.directory}/{n}"), n) for n in listing.files]
    if not parts:
        raise LakeDataError(f"Bronze hour {listing.hour} holds no rows (the ingest closed it empty)")
    return BronzeGate(lake_root)(pa.concat_tables(parts), listing.hour)


def _with_generation(rows: pa.Table, file_name: str) -> pa.Table:
    name = BronzeFileName.parse(file_name)
    generation = name.generation if name is not None else 0
    return rows.append_column("bronze_generation", pa.array([generation] * rows.num_rows, pa.int32()))


def read_day(lake_root: str, table: str, day: _dt.date, schema: pa.Schema) -> pa.Table:
    """Rows of ``table`` for ``day`` (its ``event_date``; all of ``gold_vehicle_state``) as ``schema``."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table(table)
    if not DeltaTable.is_deltatable(path):
        raise LakeDataError(f"no {table} table at {path}")
    dataset = delta_dataset(path)
    if "event_date" in schema.names and table != "gold_vehicle_state":
        rows = dataset.to_table(filter=ds.field("event_date") == pa.scalar(day, pa.date32()))
    else:
        rows = dataset.to_table()
    names = [n for n in schema.names if n in rows.column_names]
    return rows.select(names).cast(pa.schema([schema.field(n) for n in names]))


def validate_silver_day(lake_root: str, day: _dt.date):
    """Silver's rows of ``day`` as stored."""
    rows = read_day(lake_root, "silver_telemetry", day, SILVER_SCHEMA)
    if rows.num_rows == 0:
        raise LakeDataError(f"Silver has no rows for {day.isoformat()}")
    result = run_suites(lake_root, "silver", day.isoformat(), [Batch("silver_telemetry", "rows", rows)])
    return enforce(result, f"silver day {day.isoformat()}", STORED)


def validate_gold_day(lake_root: str, day: _dt.date):
    """Gold's day ``day`` as stored, reconciled with Silver's day."""
    hourly = read_day(lake_root, "gold_vehicle_hourly", day, GOLD_VEHICLE_HOURLY_SCHEMA)
    if hourly.num_rows == 0:
        raise LakeDataError(f"gold_vehicle_hourly has no rows for {day.isoformat()}: run `lake gold --date` first")
    zone = read_day(lake_root, "gold_zone_hourly", day, GOLD_ZONE_HOURLY_SCHEMA)
    state = read_day(lake_root, "gold_vehicle_state", day, GOLD_VEHICLE_STATE_SCHEMA)
    silver_rows = read_day(lake_root, "silver_telemetry", day, SILVER_SCHEMA).num_rows
    return GoldGate(lake_root, publishing=False)(hourly, zone, state, silver_rows, day)
