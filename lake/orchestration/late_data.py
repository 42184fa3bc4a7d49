"""Which Gold days an hour of Silver made stale.

Silver partitions by event time and Bronze by arrival time, so a Bronze
hour can add rows to earlier days: a vehicle that was offline, a sender
clock behind (up to 7 days is kept as sent). The daily DAG computes day D
once D's 24 Bronze hours are published; rows of D that arrive later must
recompute D.

``gold_days_to_recompute(lake_root, hour_ms)`` returns the days to which
the hour's Bronze rows contributed Silver rows (the rows Silver holds with
this hour's Kafka coordinates: duplicates of rows already there do not
count), keeping the days before the hour's own day (whose daily run may have
read Silver already, or may be running now) and any day whose Gold already
exists. The answer depends only on the lake, not on which run asks, so a
re-run or a retry of the hour gives the same days.
"""

from __future__ import annotations

import datetime as _dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lake_core.bronze.hour_files import list_bronze_hour
from lake_core.storage import delta_dataset, filesystem
from lake_schemas import LakePaths
from lake_schemas.rules import correct_event_time

__all__ = ["gold_days_to_recompute", "gold_day_exists", "silver_days_from_hour"]

_KEY = ["kafka_partition", "kafka_offset"]


def _bronze_rows(lake_root: str, hour_ms: int) -> pa.Table:
    listing = list_bronze_hour(lake_root, hour_ms)
    fs, _ = filesystem(lake_root)
    parts = [
        pq.read_table(f"{listing.directory}/{name}", columns=[*_KEY, "event_ts", "ingest_ts"], filesystem=fs)
        for name in listing.files
    ]
    if not parts:
        return pa.table(
            {
                "kafka_partition": pa.array([], pa.int32()),
                "kafka_offset": pa.array([], pa.int64()),
                "event_date": pa.array([], pa.date32()),
            }
        )
    rows = pa.concat_tables(parts)
    # Silver's event_date is the date of the event time after rule 1 (server-side time).
    event_ts, _ = correct_event_time(rows["event_ts"], rows["ingest_ts"])
    return pa.table(
        {
            "kafka_partition": rows["kafka_partition"],
            "kafka_offset": rows["kafka_offset"],
            "event_date": pc.cast(event_ts, pa.date32()),
        }
    )


def _may_hold(bronze: pa.Table, days: set):
    """A filter for Silver rows of ``days`` in the hour's offset range of each Kafka partition.

    Exact matching is the join below; this lets the scan skip the files whose
    statistics say they hold none of the hour's offsets (a day holds many hours).
    """
    ranges = bronze.group_by("kafka_partition").aggregate([("kafka_offset", "min"), ("kafka_offset", "max")])
    in_hour = None
    columns = ("kafka_partition", "kafka_offset_min", "kafka_offset_max")
    for partition, low, high in zip(*(ranges[c].to_pylist() for c in columns)):
        one = (
            (ds.field("kafka_partition") == partition)
            & (ds.field("kafka_offset") >= low)
            & (ds.field("kafka_offset") <= high)
        )
        in_hour = one if in_hour is None else in_hour | one
    return ds.field("event_date").isin(pa.array(sorted(days), pa.date32())) & in_hour


def gold_day_exists(lake_root: str, day: _dt.date) -> bool:
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table("gold_vehicle_hourly")
    if not DeltaTable.is_deltatable(path):
        return False
    return bool(DeltaTable(path).file_uris(file_pruning_predicate=[("event_date", "=", day.isoformat())]))


def silver_days_from_hour(lake_root: str, hour_ms: int, days: set) -> set:
    """Those of ``days`` where Silver holds rows that came from the Bronze hour starting at ``hour_ms``."""
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table("silver_telemetry")
    if not days or not DeltaTable.is_deltatable(path):
        return set()
    bronze = _bronze_rows(lake_root, hour_ms).select(_KEY)
    if bronze.num_rows == 0:
        return set()
    silver = delta_dataset(path).to_table(columns=[*_KEY, "event_date"], filter=_may_hold(bronze, days))
    silver = silver.cast(
        pa.schema(
            [
                pa.field("kafka_partition", pa.int32()),
                pa.field("kafka_offset", pa.int64()),
                pa.field("event_date", pa.date32()),
            ]
        )
    )
    from_hour = silver.join(bronze, keys=_KEY, join_type="left semi")
    return set(pc.unique(from_hour["event_date"]).to_pylist())


def gold_days_to_recompute(lake_root: str, hour_ms: int) -> list:
    """The days (sorted ``datetime.date``) whose Gold the Bronze hour at ``hour_ms`` made stale."""
    hour_day = _dt.datetime.fromtimestamp(hour_ms / 1000, _dt.timezone.utc).date()
    bronze_days = set(pc.unique(_bronze_rows(lake_root, hour_ms)["event_date"]).drop_null().to_pylist())
    candidates = {d for d in bronze_days if d < hour_day or gold_day_exists(lake_root, d)}
    return sorted(silver_days_from_hour(lake_root, hour_ms, candidates))
