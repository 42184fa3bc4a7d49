"""Where Silver keeps each event whose time rule 1 replaced: ``silver/_corrected``, by the sender's date.

Silver is partitioned by ``event_date``. The copies of one event share the
sender's time (a redelivery is the same message), so a copy whose time was
kept lives in the partition of its sender's date, which the MERGE looks at;
but a copy whose time was corrected lives in the date it was *ingested*,
which a later copy (ingested days after) cannot know. This index (Delta,
partitioned by ``sender_date``, ``CORRECTED_INDEX_SCHEMA``) holds
``(vehicle_id, event_id) -> event_date`` for every corrected Silver row. A
batch reads the index partitions of its candidates' sender dates (the days
it touches, never the whole index, and corrected rows are few) and adds the
dates it finds to its MERGE. ``lake forget`` erases a vehicle from it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Union

import pyarrow as pa
import pyarrow.compute as pc

from lake_core.delta import date_list_sql, open_table, with_commit_retries
from lake_core.delta_read import read_columns
from lake_schemas.paths import join
from lake_schemas.tables import CORRECTED_INDEX_PATH, CORRECTED_INDEX_SCHEMA

if TYPE_CHECKING:
    from beam_pipelines.silver.hour_rows import HourRows

__all__ = ["index_path", "sender_dates", "dates_holding", "record_corrected", "forget_vehicle"]


def index_path(lake_root: str) -> str:
    return join(lake_root, CORRECTED_INDEX_PATH)


def _table(lake_root: str) -> Any:
    return open_table(
        index_path(lake_root),
        CORRECTED_INDEX_SCHEMA,
        "silver_corrected_index",
        partition_by=["sender_date"],
        description="Silver rows whose event time was corrected, by the sender's date",
    )


def _sender_date(silver: pa.Table) -> pa.Array:
    return pc.cast(pc.coalesce(silver["sender_ts"], silver["event_ts"]), pa.date32())


def sender_dates(silver: pa.Table) -> set:
    return set(pc.unique(_sender_date(silver)).to_pylist()) if silver.num_rows else set()


def _key(table: pa.Table) -> Any:
    return pc.binary_join_element_wise(table["vehicle_id"], table["event_id"], "\x00")


def _tables(silver: Union[pa.Table, HourRows], columns: list) -> Iterator[pa.Table]:
    if isinstance(silver, pa.Table):
        yield silver.select(columns)
    else:
        yield from silver.tables(columns)


def dates_holding(lake_root: str, silver: Union[pa.Table, HourRows]) -> set:
    """The Silver partitions holding a corrected copy of one of ``silver``'s events (read part by part)."""
    dates = set().union(*(sender_dates(t) for t in _tables(silver, ["sender_ts", "event_ts"])))
    if not dates:
        return set()
    found = read_columns(
        lake_root,
        "silver_corrected_index",
        ["vehicle_id", "event_id", "event_date"],
        date_list_sql("sender_date", dates),
        path=index_path(lake_root),
        schema=CORRECTED_INDEX_SCHEMA,
    )
    if found.num_rows == 0:  # the usual case: no corrected copies on those days
        return set()
    held = _key(found)
    holding: set = set()
    for keys in _tables(silver, ["vehicle_id", "event_id"]):
        # the candidates' keys one part at a time: a lookup set of one shard, never of the hour
        mine = pc.is_in(held, value_set=_key(keys))
        holding |= set(pc.unique(found["event_date"].filter(mine)).to_pylist())
    return holding


def record_corrected(lake_root: str, silver: Union[pa.Table, HourRows]) -> int:
    """Add ``silver``'s corrected rows (as published) to the index; idempotent. Returns the rows offered."""
    columns = ["vehicle_id", "event_id", "sender_ts", "event_ts", "event_date", "ts_corrected"]
    parts = [t.filter(t["ts_corrected"]) for t in _tables(silver, columns)]
    rows = pa.concat_tables(parts) if parts else None
    if rows is None or rows.num_rows == 0:
        return 0
    entries = pa.table(
        {
            "vehicle_id": rows["vehicle_id"],
            "event_id": rows["event_id"],
            "sender_date": _sender_date(rows),
            "event_date": rows["event_date"],
        }
    ).cast(CORRECTED_INDEX_SCHEMA)
    days = set(pc.unique(entries["sender_date"]).to_pylist())
    predicate = (
        "t.vehicle_id = s.vehicle_id AND t.event_id = s.event_id AND t.event_date = s.event_date AND "
        + date_list_sql("t.sender_date", days)
    )

    def merge() -> None:
        (
            _table(lake_root)
            .merge(entries, predicate=predicate, source_alias="s", target_alias="t")
            .when_not_matched_insert_all()
            .execute()
        )

    with_commit_retries(merge, "MERGE into silver/_corrected")
    return entries.num_rows


def forget_vehicle(lake_root: str, vehicle_id: str) -> int:
    """Delete ``vehicle_id``'s entries (``lake forget``); return how many."""
    from deltalake import DeltaTable

    path = index_path(lake_root)
    if not DeltaTable.is_deltatable(path):
        return 0
    quoted = vehicle_id.replace("'", "''")
    metrics = with_commit_retries(
        lambda: DeltaTable(path).delete(f"vehicle_id = '{quoted}'"), "delete a vehicle from silver/_corrected"
    )
    return int(metrics.get("num_deleted_rows", 0))
