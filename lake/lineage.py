"""Lineage: from a Gold row back to the Silver rows behind it and the Kafka records they came from.

    lineage("gold_vehicle_hourly", lake_root, vehicle="V1", hour="2026-03-01T08")
    lineage("gold_zone_hourly", lake_root, zone="u33db2", hour="2026-03-01T08")
    lineage("gold_vehicle_state", lake_root, vehicle="V1")

returns one row per Silver row behind the Gold row (Arrow, or pandas with
``output="pandas"``), each with its Kafka topic, partition and offset and the
Bronze file that holds that record (a path under the lake root); a position
paired from two signals names the lon's record and file too. For the hourly
tables the rows are the Silver rows of the key in that hour of event time,
as Gold counts them (their number is the Gold row's ``event_count``); for
the state, the rows that supplied its latest value of each field, with
``fields`` naming which. ``lake lineage`` is the command line of it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from lake_core.delta import date_list_sql
from lake_core.delta_read import read_columns
from lake_core.errors import ConfigError, LakeDataError
from lake_core.settings import Settings
from lake_core.storage import filesystem, fs_path
from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.paths import TABLES, hour_partition, parse_hour
from lake_schemas.tables import MEASUREMENT_FIELDS

__all__ = ["GOLD_KEYS", "COLUMNS", "lineage", "gold_count"]

#: The key flags of each Gold table's rows.
GOLD_KEYS = {
    "gold_vehicle_hourly": ("vehicle", "hour"),
    "gold_zone_hourly": ("zone", "hour"),
    "gold_vehicle_state": ("vehicle",),
}
_SILVER_COLUMNS = [
    "vehicle_id",
    "event_id",
    "event_ts",
    "event_date",
    "ingest_ts",
    "source_shape",
    "zone_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "bronze_hour",
    "bronze_file",
    "paired_kafka_partition",
    "paired_kafka_offset",
]
#: The columns of a lineage, in order.
COLUMNS = [
    "vehicle_id",
    "event_id",
    "event_ts",
    "ingest_ts",
    "source_shape",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "bronze_file",
    "paired_kafka_partition",
    "paired_kafka_offset",
    "paired_bronze_file",
]
_STATE_FIELDS = [f.name for f in MEASUREMENT_FIELDS] + ["zone_id"]


def _check_keys(table: str, vehicle: Optional[str], zone: Optional[str], hour: Optional[str]) -> None:
    if table not in GOLD_KEYS:
        raise ConfigError(f"no lineage for {table!r}: one of {', '.join(GOLD_KEYS)}")
    given = {"vehicle": vehicle, "zone": zone, "hour": hour}
    missing = [f"--{k}" for k in GOLD_KEYS[table] if not given[k]]
    extra = [f"--{k}" for k, v in given.items() if v and k not in GOLD_KEYS[table]]
    if missing or extra:
        keys = " ".join(f"--{k}" for k in GOLD_KEYS[table])
        raise ConfigError(
            f"a row of {table} is named by {keys}" + (f" ({', '.join(extra)} does not apply)" if extra else "")
        )
    if hour:
        try:
            parse_hour(hour)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _hour_bounds(hour: str) -> tuple[pa.Scalar, pa.Scalar, _dt.date]:
    start = parse_hour(hour)
    ts = pa.timestamp("ms", tz="UTC")
    return pa.scalar(start, ts), pa.scalar(start + _dt.timedelta(hours=1), ts), start.date()


def _silver_of_day(lake_root: str, day: _dt.date) -> pa.Table:
    rows = read_columns(lake_root, "silver_telemetry", _SILVER_COLUMNS, date_list_sql("event_date", [day]))
    return rows.filter(pc.equal(rows["event_date"], pa.scalar(day, pa.date32())))


def _gold_row(lake_root: str, table: str, key: dict, day: Optional[_dt.date]) -> dict:
    columns = {
        "gold_vehicle_hourly": ["vehicle_id", "hour_start", "event_date", "event_count"],
        "gold_zone_hourly": ["zone_id", "hour_start", "event_date", "event_count"],
        "gold_vehicle_state": ["vehicle_id", "last_event_ts", "as_of_date"],
    }[table]
    rows = read_columns(lake_root, table, columns, date_list_sql("event_date", [day]) if day else "TRUE")
    for name, value in key.items():
        rows = rows.filter(pc.equal(rows[name], pa.scalar(value, rows.schema.field(name).type)))
    if rows.num_rows == 0:
        shown = ", ".join(f"{k} {v}" for k, v in key.items())
        raise LakeDataError(f"{table} has no row for {shown}")
    return rows.to_pylist()[0]


def _bronze_path(hour: Optional[str], name: Optional[str]) -> Optional[str]:
    if not hour or not name:
        return None
    return f"{TABLES['bronze_telemetry']}/{hour_partition(int(parse_hour(hour).timestamp() * 1000))}/{name}"


def _paired_files(lake_root: str, rows: pa.Table) -> list:
    """The Bronze file of each row's paired (lon) record: in the lat's hour folder, by the offset ranges of names."""
    fs, _ = filesystem(lake_root)
    listings: dict = {}
    found = []
    for hour, name, partition, offset in zip(
        rows["bronze_hour"].to_pylist(),
        rows["bronze_file"].to_pylist(),
        rows["paired_kafka_partition"].to_pylist(),
        rows["paired_kafka_offset"].to_pylist(),
    ):
        if offset is None or not hour:
            found.append(None)
            continue
        if hour not in listings:
            directory = fs_path(lake_root, LakePaths(lake_root).bronze_hour(int(parse_hour(hour).timestamp() * 1000)))
            infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
            listings[hour] = [BronzeFileName.parse(i.base_name) for i in infos]
        generation = (BronzeFileName.parse(name or "") or BronzeFileName(0, 0, 0, 1, 1)).generation
        match = [
            n
            for n in listings[hour]
            if n
            and n.generation == generation
            and n.partition == partition
            and n.first_offset <= offset <= n.last_offset
        ]
        found.append(_bronze_path(hour, str(match[0])) if match else None)
    return found


def _finish(rows: pa.Table, lake_root: str) -> pa.Table:
    rows = rows.sort_by([("event_ts", "ascending"), ("event_id", "ascending")])
    files = [_bronze_path(h, n) for h, n in zip(rows["bronze_hour"].to_pylist(), rows["bronze_file"].to_pylist())]
    out = {c: rows[c] for c in COLUMNS if c in rows.column_names}
    out["bronze_file"] = pa.array(files, pa.string())
    out["paired_bronze_file"] = pa.array(_paired_files(lake_root, rows), pa.string())
    return pa.table({c: out[c] for c in COLUMNS})


def _state_lineage(lake_root: str, vehicle: str) -> tuple[pa.Table, dict]:
    state = _gold_row(lake_root, "gold_vehicle_state", {"vehicle_id": vehicle}, None)
    columns = _SILVER_COLUMNS + [c for c in _STATE_FIELDS if c not in _SILVER_COLUMNS]
    rows = read_columns(lake_root, "silver_telemetry", columns, "TRUE")
    rows = rows.filter(pc.equal(rows["vehicle_id"], vehicle))
    rows = rows.filter(pc.less_equal(rows["event_date"], pa.scalar(state["as_of_date"], pa.date32())))
    rows = rows.sort_by([("event_ts", "descending"), ("event_id", "descending")])
    supplied: dict = {}  # row index -> fields
    for name in _STATE_FIELDS:
        valid = pc.is_valid(rows[name])
        if pc.any(valid).as_py():
            index = pc.index(valid, True).as_py()
            supplied.setdefault(index, []).append(name)
    if rows.num_rows:
        supplied.setdefault(0, [])  # the latest row gives last_event_ts
    chosen = sorted(supplied)
    picked = _finish(rows.take(pa.array(chosen, pa.int64())).select(_SILVER_COLUMNS), lake_root)
    by_event = {rows["event_id"][i].as_py(): supplied[i] for i in chosen}
    fields = pa.array([by_event[e] for e in picked["event_id"].to_pylist()], pa.list_(pa.string()))
    return picked.append_column("fields", fields), state


def lineage(
    table: str,
    lake_root: Optional[str] = None,
    *,
    vehicle: Optional[str] = None,
    hour: Optional[str] = None,
    zone: Optional[str] = None,
    output: str = "arrow",
) -> Any:
    """The Silver rows behind one Gold row and their Kafka records (see the module docstring).

    Raises ``ConfigError`` for a key that does not name a row of ``table``'s kind and
    ``LakeDataError`` when Gold has no such row.
    """
    _check_keys(table, vehicle, zone, hour)
    root = lake_root or Settings.resolve(bootstrap="unused").lake_root
    if table == "gold_vehicle_state":
        result, _ = _state_lineage(root, str(vehicle))
    else:
        assert hour is not None
        start, end, day = _hour_bounds(hour)
        key_column, key = ("vehicle_id", vehicle) if table == "gold_vehicle_hourly" else ("zone_id", zone)
        _gold_row(root, table, {key_column: key, "hour_start": start.as_py()}, day)
        rows = _silver_of_day(root, day)
        rows = rows.filter(
            pc.and_(
                pc.equal(rows[key_column], key),
                pc.and_(pc.greater_equal(rows["event_ts"], start), pc.less(rows["event_ts"], end)),
            )
        )
        result = _finish(rows, root)
    return result.to_pandas() if output == "pandas" else result


def gold_count(
    lake_root: str, table: str, *, vehicle: Optional[str] = None, zone: Optional[str] = None, hour: str
) -> int:
    """``event_count`` of an hourly Gold row (what its lineage must add up to)."""
    start, _, day = _hour_bounds(hour)
    key = {"vehicle_id": vehicle} if table == "gold_vehicle_hourly" else {"zone_id": zone}
    return int(_gold_row(lake_root, table, {**key, "hour_start": start.as_py()}, day)["event_count"])
