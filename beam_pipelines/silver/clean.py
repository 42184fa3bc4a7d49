"""Parsed Bronze rows -> Silver candidates and quarantine, on Arrow tables.

The contract's rules in order, as ``lake_schemas.rules`` writes them:
pair signal positions (a decision of ours, see ``lake_schemas.rules``),
rule 1 (server-side time), rule 2 (quarantine), enrichment (``zone_id``,
``vehicle_type``), rule 3 within the batch (first ingested wins). Rule 3
across Silver happens at the MERGE (``commit.py``).

Everything here is a pure function of its inputs: a batch holds whole
vehicles (the pipeline shards by vehicle), so it can be cleaned on any worker.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.silver.hour_rows import HourRows
from beam_pipelines.silver.ledger_counts import count_rows
from lake_schemas.geohash import encode_arrow
from lake_schemas.rules import (
    DEDUP_KEY,
    GEOHASH_PRECISION,
    POSITION_SIGNALS,
    UNKNOWN_VEHICLE_TYPE,
    WINNER_ORDER,
    QuarantineReason,
    correct_event_time,
    quarantine_reasons,
)
from lake_schemas.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA

__all__ = ["CleanBatch", "WORK_QUARANTINE_SCHEMA", "clean_batch", "first_per_key", "merge_batches"]

#: Quarantine rows as the cleaning step leaves them: the table's schema plus,
#: for a lone lat or lon signal, the id of the position it belongs to (the
#: commit drops the row as a duplicate when Silver already holds that position).
WORK_QUARANTINE_SCHEMA = QUARANTINE_SCHEMA.append(pa.field("position_event_id", pa.string()))


class CleanBatch(NamedTuple):
    silver: Any  # SILVER_SCHEMA, unique on DEDUP_KEY: a table, or ``HourRows`` (shards, staged)
    quarantine: pa.Table  # WORK_QUARANTINE_SCHEMA
    dates: frozenset  # event_date partitions a MERGE of ``silver`` must look at
    stats: dict  # counters: bronze_rows, duplicates, quarantined_<reason>...


def first_per_key(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """Indices (ascending) of the first row of each distinct ``keys`` by ``WINNER_ORDER``."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    order = pc.sort_indices(table, sort_keys=list(WINNER_ORDER)).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    ranked = table.select(list(keys)).append_column("_rank", pa.array(rank))
    winners = ranked.group_by(list(keys), use_threads=False).aggregate([("_rank", "min")])["_rank_min"]
    return np.sort(order[winners.to_numpy()])


_ORDER_COLUMNS = [c for c, _ in WINNER_ORDER]
_POSITION_KEY = ["vehicle_id", "raw_event_ts"]


def _plan_rows(parsed: pa.Table, stats: Counter) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Which parsed rows become rows, after pairing lat and lon signals into positions.

    Returns ``(rows, lon_from, position_event_id)``: the parsed row of each
    output row, the parsed row its ``lon`` comes from (the lon signal for a
    pair, itself otherwise), and for a lone lat or lon signal the id of the
    position it belongs to (null otherwise).
    """
    names = parsed["signal_name"]
    is_lat = pc.equal(names, POSITION_SIGNALS[0]).fill_null(False).to_numpy(zero_copy_only=False)
    is_lon = pc.equal(names, POSITION_SIGNALS[1]).fill_null(False).to_numpy(zero_copy_only=False)
    others = np.flatnonzero(~(is_lat | is_lon))
    if len(others) == parsed.num_rows:
        return others, others, pa.nulls(len(others), pa.string())

    winners = []
    for mask in (is_lat, is_lon):  # a redelivered copy of a half is a duplicate: first ingested wins
        candidates = np.flatnonzero(mask)
        chosen = candidates[
            first_per_key(parsed.select(_POSITION_KEY + _ORDER_COLUMNS).take(candidates), _POSITION_KEY)
        ]
        stats["duplicates"] += len(candidates) - len(chosen)
        count_rows(parsed, np.setdiff1d(candidates, chosen), "duplicates", stats)
        winners.append(chosen)
    lat, lon = winners
    lat_keys = parsed.select(_POSITION_KEY).take(lat).append_column("_lat", pa.array(lat))
    lon_keys = parsed.select(_POSITION_KEY).take(lon).append_column("_lon", pa.array(lon))
    joined = lat_keys.join(lon_keys, keys=_POSITION_KEY, join_type="full outer", use_threads=False)
    lat_of = joined["_lat"].to_numpy(zero_copy_only=False)  # float with NaN for a missing half
    lon_of = joined["_lon"].to_numpy(zero_copy_only=False)
    paired = ~np.isnan(lat_of) & ~np.isnan(lon_of)
    pair_lat, pair_lon = lat_of[paired].astype(np.int64), lon_of[paired].astype(np.int64)
    lone = np.concatenate([lat_of[np.isnan(lon_of)], lon_of[np.isnan(lat_of)]]).astype(np.int64)
    stats["positions_paired"] += len(pair_lat)  # each pair's lon message is folded into its lat row
    count_rows(parsed, pair_lon, "paired_positions", stats)

    lone_rows = parsed.select(_POSITION_KEY).take(lone)
    lone_ids = pc.binary_join_element_wise(
        lone_rows["vehicle_id"],
        POSITION_SIGNALS[0],
        pc.cast(pc.cast(lone_rows["raw_event_ts"], pa.int64()), pa.string()),
        ":",
    )
    position_id = pa.concat_arrays([pa.nulls(len(others) + len(pair_lat), pa.string()), _array(lone_ids)])
    rows = np.concatenate([others, pair_lat, lone])
    lon_from = np.concatenate([others, pair_lon, lone])
    return rows, lon_from, position_id


def _vehicle_types(vehicle_id: Any, registry: pa.Table) -> pa.Array:
    if registry.num_rows == 0:
        return pa.array(np.full(len(vehicle_id), UNKNOWN_VEHICLE_TYPE, dtype=object), pa.string())
    where = pc.index_in(vehicle_id, value_set=registry["vehicle_id"].combine_chunks())
    return _array(pc.take(registry["vehicle_type"], where).fill_null(UNKNOWN_VEHICLE_TYPE))


#: Columns taken as parsed; the rest of Silver's and quarantine's are derived here.
_DERIVED = {
    "lon",
    "event_ts",
    "event_date",
    "ts_corrected",
    "zone_id",
    "vehicle_type",
    "reason",
    "bronze_hour",
    "position_event_id",
    "paired_kafka_partition",
    "paired_kafka_offset",
    "sender_ts",
}


def _assemble(parsed: pa.Table, rows: np.ndarray, derived: dict, schema: pa.Schema) -> pa.Table:
    """``schema``'s columns for ``rows``: taken from ``parsed`` or from ``derived`` (already per row)."""
    taken = parsed.select([n for n in schema.names if n not in _DERIVED]).take(pa.array(rows))
    columns = [derived[n] if n in _DERIVED else taken[n] for n in schema.names]
    return pa.table(columns, names=schema.names).cast(schema)


def clean_batch(parsed: pa.Table, registry: pa.Table, bronze_hour: str) -> CleanBatch:
    """Apply the Silver rules to ``parsed`` (``parse.PARSED_SCHEMA`` rows of whole vehicles).

    ``registry`` has ``vehicle_id`` (unique) and ``vehicle_type``;
    ``bronze_hour`` (``2026-03-01T08``) is recorded on Silver and quarantine rows.
    Works on row indices and takes each output's wide columns once.
    """
    stats: Counter = Counter(bronze_rows=parsed.num_rows)
    rows, lon_from, position_id = _plan_rows(parsed, stats)
    lon = _array(parsed["lon"].take(pa.array(lon_from)))
    paired = pa.array(lon_from != rows)  # the row's lon came from another message: lineage names both
    paired_at = {
        c: pc.if_else(paired, _array(parsed[c].take(pa.array(lon_from))), None)
        for c in ("kafka_partition", "kafka_offset")
    }
    slim = (
        parsed.select(
            [
                "lat",
                "soc_pct",
                "speed_kmh",
                "raw_event_ts",
                "ingest_ts",
                "malformed",
                "vehicle_id",
                "event_id",
                *_ORDER_COLUMNS[1:],
            ]
        )
        .take(pa.array(rows))
        .append_column("lon", lon)
    )

    # Rule 1. A row without a sender time (malformed) takes its ingest time too.
    raw = pc.coalesce(slim["raw_event_ts"], slim["ingest_ts"])
    event_ts, corrected = correct_event_time(raw, slim["ingest_ts"])
    corrected = _array(pc.or_(corrected, pc.is_null(slim["raw_event_ts"])))
    sender_ts = _array(pc.if_else(corrected, slim["raw_event_ts"], None))  # kept where rule 1 replaced it
    stats["ts_corrected"] += pc.sum(corrected).as_py() or 0

    # Rule 2.
    reason = pc.if_else(slim["malformed"], QuarantineReason.MALFORMED_PAYLOAD.value, quarantine_reasons(slim))
    keep = pc.is_null(reason).to_numpy(zero_copy_only=False)

    # Rule 3 within the batch, among rows that passed.
    passed = np.flatnonzero(keep)
    candidates = slim.take(pa.array(passed)).select(list(DEDUP_KEY) + _ORDER_COLUMNS)
    silver_pos = passed[first_per_key(candidates, DEDUP_KEY)]
    stats["duplicates"] += len(passed) - len(silver_pos)
    count_rows(parsed, rows[np.setdiff1d(passed, silver_pos)], "duplicates", stats)
    quarantine_pos = np.flatnonzero(~keep)

    vehicle_type = _vehicle_types(slim["vehicle_id"], registry)
    event_date = pc.cast(event_ts, pa.date32())

    def per_row(positions: np.ndarray) -> dict:
        idx = pa.array(positions)
        return {
            "lon": lon.take(idx),
            "event_ts": event_ts.take(idx),
            "event_date": event_date.take(idx),
            "ts_corrected": corrected.take(idx),
            "vehicle_type": vehicle_type.take(idx),
            "paired_kafka_partition": paired_at["kafka_partition"].take(idx),
            "paired_kafka_offset": paired_at["kafka_offset"].take(idx),
            "sender_ts": sender_ts.take(idx),
        }

    derived = per_row(silver_pos)
    derived["bronze_hour"] = pa.array(np.full(len(silver_pos), bronze_hour, dtype=object), pa.string())
    lat_s = _array(slim["lat"].take(pa.array(silver_pos)))
    derived["zone_id"] = encode_arrow(lat_s, derived["lon"], pc.is_valid(lat_s), GEOHASH_PRECISION)
    silver = _assemble(parsed, rows[silver_pos], derived, SILVER_SCHEMA)
    raw_dates = pc.cast(slim["raw_event_ts"].take(pa.array(silver_pos)), pa.date32())
    dates = frozenset(pc.unique(derived["event_date"]).to_pylist()) | frozenset(pc.unique(raw_dates).to_pylist())
    stats["silver_candidates"] += silver.num_rows

    derived = per_row(quarantine_pos)
    idx = pa.array(quarantine_pos)
    derived.update(
        zone_id=pa.nulls(len(idx), pa.string()),
        reason=_array(reason).take(idx),
        bronze_hour=pa.array(np.full(len(idx), bronze_hour, dtype=object), pa.string()),
        position_event_id=position_id.take(idx),
    )
    quarantine = _assemble(parsed, rows[quarantine_pos], derived, WORK_QUARANTINE_SCHEMA)
    for value, count in Counter(derived["reason"].to_pylist()).items():
        stats[f"quarantined_{value}"] += count
    return CleanBatch(silver, quarantine, dates, dict(stats))


def merge_batches(batches: Iterable[CleanBatch]) -> CleanBatch:
    """One ``CleanBatch`` of several (shards of one hour): the quarantines concatenated, the Silver
    candidates as ``HourRows`` of every shard's part (kept apart: see ``hour_rows``)."""
    batches = list(batches)
    stats: Counter = Counter()
    parts: list = []
    staging = None
    for b in batches:
        stats.update(b.stats)
        rows = b.silver if isinstance(b.silver, HourRows) else HourRows.of(b.silver)
        parts += rows.parts
        staging = staging or rows.staging
    return CleanBatch(
        HourRows(parts, staging),
        pa.concat_tables([b.quarantine for b in batches]) if batches else WORK_QUARANTINE_SCHEMA.empty_table(),
        frozenset().union(*(b.dates for b in batches)),
        dict(stats),
    )


def _array(values: Any) -> Any:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
