"""Publish one cleaned Bronze hour: gate, MERGE into Silver, replace its quarantine.

Idempotent by construction: the MERGE inserts only ``(vehicle_id,
event_id)`` pairs Silver does not hold, and the hour's quarantine rows are
replaced as a whole (and not even rewritten when unchanged), so running an
hour again commits nothing. Each write retries when a concurrent run (another
hour) won the commit race. Silver is written before the quarantine: a run
killed between the two leaves Silver right and the next run completes the
quarantine.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from beam_pipelines.silver import corrected_index
from beam_pipelines.silver.clean import CleanBatch
from beam_pipelines.silver.hour_rows import HourRows
from beam_pipelines.silver.ledger_counts import count_rows, partition_counts, without_partition_counts
from lake_core import ledger
from lake_core.delta import check_existing, date_list_sql, open_table, with_commit_retries
from lake_core.delta_read import read_columns
from lake_core.errors import ConfigError
from lake_core.settings import env
from lake_core.storage import delta_dataset, filesystem, fs_path
from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.rules import DEDUP_KEY
from lake_schemas.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA
from quality.gates import CHUNK_ROWS

__all__ = [
    "SilverCommit",
    "commit_hour",
    "check_existing_tables",
    "resolve_lone_positions",
    "silver_table",
    "quarantine_table",
]

LOG = logging.getLogger(__name__)
PARTITION = "event_date"

#: ``gate(silver, quarantine, stats, bronze_hour)`` raises ``QualityGateFailed`` to stop the commit;
#: ``silver`` comes in chunks (``quality.results.Batch.parts``) of at most ``CHUNK_ROWS`` rows.
Gate = Callable[[pa.Table, pa.Table, dict, str], object]


@dataclass
class SilverCommit:
    inserted: int = 0  # new Silver rows
    already_in_silver: int = 0  # candidates Silver held from an earlier hour or run
    quarantined: int = 0
    quarantine_written: bool = False
    stats: dict = field(default_factory=dict)


def silver_table(lake_root: str) -> Any:
    return open_table(
        LakePaths(lake_root).table("silver_telemetry"),
        SILVER_SCHEMA,
        "silver_telemetry",
        partition_by=[PARTITION],
        description="clean telemetry events, one row per (vehicle_id, event_id)",
    )


def quarantine_table(lake_root: str) -> Any:
    return open_table(
        LakePaths(lake_root).table("silver_quarantine"),
        QUARANTINE_SCHEMA,
        "silver_quarantine",
        partition_by=[PARTITION],
        description="rows Silver's rules refused, with the reason",
    )


def check_existing_tables(lake_root: str) -> None:
    """Refuse (``LakeDataError``) a Silver or quarantine table of another schema, creating nothing."""
    paths = LakePaths(lake_root)
    check_existing(paths.table("silver_telemetry"), SILVER_SCHEMA, "silver_telemetry")
    check_existing(paths.table("silver_quarantine"), QUARANTINE_SCHEMA, "silver_quarantine")


def resolve_lone_positions(lake_root: str, batch: CleanBatch) -> CleanBatch:
    """Drop lone lat/lon halves whose position Silver already holds: they are redeliveries."""
    q = batch.quarantine
    lone_mask = pc.is_valid(q["position_event_id"])
    lone = q.filter(lone_mask)
    if lone.num_rows == 0:
        return batch
    # The position row has its sender's date or, when its time was corrected, its ingest date: look at both.
    dates = set(pc.unique(lone["event_date"]).to_pylist()) | _sender_dates(lone["position_event_id"])
    held = _silver_keys(lake_root, pc.unique(lone["position_event_id"]), dates)
    if not held:
        return batch
    key = pc.binary_join_element_wise(q["vehicle_id"], q["position_event_id"], "\x00")
    held_keys = pa.array([f"{v}\x00{e}" for v, e in held], pa.string())
    redelivered = pc.and_(pc.is_in(key, value_set=held_keys).fill_null(False), lone_mask)
    stats = Counter(batch.stats)
    for reason, count in Counter(q.filter(redelivered)["reason"].to_pylist()).items():
        stats[f"quarantined_{reason}"] -= count
        stats["duplicates"] = stats.get("duplicates", 0) + count
    count_rows(q, np.flatnonzero(redelivered.to_numpy(zero_copy_only=False)), "duplicates", stats)
    return batch._replace(quarantine=q.filter(pc.invert(redelivered)), stats=dict(stats))


def _sender_dates(position_ids: Any) -> set:
    """UTC dates of the timestamps in ``{did}:lat:{timestamp}`` ids (a did has no colon)."""
    ms = pc.cast(pc.replace_substring_regex(position_ids, r"^.*:", ""), pa.int64())
    return set(pc.unique(pc.cast(pc.cast(ms, pa.timestamp("ms", tz="UTC")), pa.date32())).to_pylist())


def _silver_keys(lake_root: str, event_ids: pa.Array, dates: set) -> set:
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table("silver_telemetry")
    if not DeltaTable.is_deltatable(path) or not dates:
        return set()
    # The Delta log picks the partitions' files: a dataset of the whole table costs time in
    # proportion to all of Silver's files. A filter on a string column trips over the
    # string_view statistics deltalake gives the dataset (pyarrow 25), so event ids are
    # matched in memory.
    dataset = delta_dataset(path, file_pruning_predicate=date_list_sql(PARTITION, dates))
    found = dataset.to_table(
        columns=list(DEDUP_KEY), filter=ds.field(PARTITION).isin(pa.array(sorted(dates), pa.date32()))
    )
    found = found.filter(pc.is_in(found["event_id"], value_set=event_ids))
    return set(zip(found["vehicle_id"].to_pylist(), found["event_id"].to_pylist()))


#: ``LAKE_MERGE_MEMORY_MB``'s default. Without a bound, delta-rs's MERGE held memory in proportion to
#: the hour's rows (5.5 GB for a 20M-event hour); with this one 1.6 GB, in the same time (measured).
MERGE_MEMORY_MB = 1024


def merge_memory() -> dict:
    """The MERGE's memory bound (``LAKE_MERGE_MEMORY_MB``) as deltalake's ``merge`` options."""
    text = env("LAKE_MERGE_MEMORY_MB") or str(MERGE_MEMORY_MB)
    try:
        megabytes = int(text)
        if megabytes < 0:
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"LAKE_MERGE_MEMORY_MB must be a number of megabytes (0: no bound), not {text!r}") from None
    return {"max_spill_size": megabytes * 1024 * 1024} if megabytes else {}


#: The source row was ingested before the target's copy: ``WINNER_ORDER`` as a MERGE condition.
_EARLIER = (
    "s.ingest_ts < t.ingest_ts OR (s.ingest_ts = t.ingest_ts AND (s.kafka_partition < t.kafka_partition"
    " OR (s.kafka_partition = t.kafka_partition AND s.kafka_offset < t.kafka_offset)))"
)


def _merge_silver(lake_root: str, silver: HourRows, dates: frozenset) -> tuple[int, int, int]:
    """Rule 3 across Silver, whatever the clocks and the order hours arrive in; return (inserted, replaced).

    A candidate Silver does not hold is inserted; one Silver holds a copy of is a duplicate unless
    it was ingested first, and then it replaces that copy (first ingested wins: an hour published
    after a later one). The candidates reach delta-rs as one stream of the shards' record batches,
    never as one table of the hour. The MERGE looks at ``dates`` (each candidate's event date and its sender's)
    plus the partitions ``corrected_index`` names: where corrected copies of these events live.
    Also returns the Silver version the winning MERGE read (where the copies it replaced are).
    """
    if silver.num_rows == 0:
        return 0, 0, -1
    dates = frozenset(dates) | corrected_index.dates_holding(lake_root, silver)
    predicate = f"t.vehicle_id = s.vehicle_id AND t.event_id = s.event_id AND {date_list_sql('t.' + PARTITION, dates)}"

    def merge(memory: dict) -> tuple[int, int, int]:
        table = silver_table(lake_root)
        read_version = table.version()
        metrics = (
            table.merge(silver.reader(), predicate=predicate, source_alias="s", target_alias="t", **memory)
            .when_matched_update_all(predicate=_EARLIER)
            .when_not_matched_insert_all()
            .execute()
        )
        inserted, updated = (
            int(metrics.get("num_target_rows_inserted", 0)),
            int(metrics.get("num_target_rows_updated", 0)),
        )
        return inserted, updated, read_version

    def bounded() -> tuple[int, int, int]:
        memory = merge_memory()
        try:
            return merge(memory)
        except Exception as exc:  # deltalake's DeltaError: DataFusion ran out of its memory pool
            if not memory or "Resources exhausted" not in str(exc):
                raise
            # What cannot spill (the join's table of the target's rows) outgrew the bound: better a
            # job that uses more memory than one that fails every hour from now on.
            LOG.warning("MERGE into silver/telemetry needs more than LAKE_MERGE_MEMORY_MB: running it unbounded")
            return merge({})

    result = with_commit_retries(bounded, "MERGE into silver/telemetry")
    corrected_index.record_corrected(lake_root, silver)
    return result


def _displaced(lake_root: str, silver: HourRows, dates: frozenset, version: int) -> dict:
    """``{(bronze hour, generation, partition): rows}`` of the copies ``silver`` replaced in Silver.

    Read from the version the MERGE read (time travel), only when it replaced any: the ledger moves
    them from their hour's new rows to its duplicates.
    """
    dates = frozenset(dates) | corrected_index.dates_holding(lake_root, silver)
    held = read_columns(
        lake_root,
        "silver_telemetry",
        [*DEDUP_KEY, "ingest_ts", "kafka_partition", "kafka_offset", "bronze_hour", "bronze_file"],
        date_list_sql(PARTITION, dates),
        version=version,
    )
    order = [(c, c + "_s") for c in ("ingest_ts", "kafka_partition", "kafka_offset")]
    replaced = []
    for mine in silver.tables([*DEDUP_KEY, "ingest_ts", "kafka_partition", "kafka_offset"]):
        pairs = held.join(mine, keys=list(DEDUP_KEY), right_suffix="_s", join_type="inner", use_threads=False)
        earlier = pc.less(pairs[order[0][1]], pairs[order[0][0]])
        same = pc.equal(pairs[order[0][1]], pairs[order[0][0]])
        earlier = pc.or_(earlier, pc.and_(same, pc.less(pairs[order[1][1]], pairs[order[1][0]])))
        same = pc.and_(same, pc.equal(pairs[order[1][1]], pairs[order[1][0]]))
        earlier = pc.or_(earlier, pc.and_(same, pc.less(pairs[order[2][1]], pairs[order[2][0]])))
        replaced.append(pairs.filter(earlier).select(["bronze_hour", "bronze_file", "kafka_partition"]))
    by_hour: Counter = Counter()
    rows = pa.concat_tables(replaced)  # silver has rows (the MERGE replaced some), so a part at least
    for hour, name, partition in zip(
        rows["bronze_hour"].to_pylist(), rows["bronze_file"].to_pylist(), rows["kafka_partition"].to_pylist()
    ):
        parsed = BronzeFileName.parse(name or "")
        by_hour[(hour, parsed.generation if parsed else 0, partition)] += 1
    return dict(by_hour)


_QUARANTINE_KEY = ["kafka_partition", "kafka_offset", "reason", "event_id"]


def _same_rows(existing: pa.Table, new: pa.Table) -> bool:
    if existing.num_rows != new.num_rows:
        return False
    if new.num_rows == 0:
        return True
    order = [(c, "ascending") for c in _QUARANTINE_KEY]
    new = new.select(_QUARANTINE_KEY)
    return existing.select(_QUARANTINE_KEY).cast(new.schema).sort_by(order).equals(new.sort_by(order))


def _hour_rows(lake_root: str, table: Any, bronze_hour: str) -> pa.Table:
    """The key columns of the quarantine's rows of ``bronze_hour``, reading only files whose statistics may hold it."""
    fs, _ = filesystem(lake_root)
    columns = _QUARANTINE_KEY + ["bronze_hour"]
    files = table.file_uris(file_pruning_predicate=f"bronze_hour = '{bronze_hour}'")
    # Files deltalake rewrote (a delete: ``lake forget``) hold string_view, which pyarrow 25 cannot compare or take.
    parts = [pq.read_table(fs_path(lake_root, f), columns=columns, filesystem=fs) for f in files]
    parts = [
        p.cast(pa.schema([c.with_type(pa.string()) if pa.types.is_string_view(c.type) else c for c in p.schema]))
        for p in parts
    ]
    rows = pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})
    return rows.filter(pc.equal(rows["bronze_hour"], bronze_hour)) if rows.num_rows else rows


def _replace_quarantine(lake_root: str, rows: pa.Table, bronze_hour: str) -> bool:
    """Make the quarantine's rows of ``bronze_hour`` exactly ``rows``; return whether a commit was needed."""
    from deltalake import write_deltalake

    def replace() -> bool:
        table = quarantine_table(lake_root)
        if _same_rows(_hour_rows(lake_root, table, bronze_hour), rows):
            return False
        write_deltalake(
            table, rows, mode="overwrite", predicate=f"bronze_hour = '{bronze_hour}'", partition_by=[PARTITION]
        )
        return True

    return with_commit_retries(replace, "replace the hour in silver/quarantine")


def _record_ledger(lake_root: str, batch: CleanBatch, silver: HourRows, bronze_hour: str) -> None:
    """The hour's row per Kafka partition in ``_ledger/hours`` (``lake_core.ledger``), once published."""
    candidates: Counter = Counter()
    for part in silver.tables(["bronze_file", "kafka_partition"]):
        count_rows(part, np.arange(part.num_rows), "candidates", candidates)
    ledger.record_silver_hour(
        lake_root,
        bronze_hour,
        duplicates=partition_counts(batch.stats, "duplicates"),
        paired=partition_counts(batch.stats, "paired_positions"),
        candidates=partition_counts(candidates, "candidates"),
    )


def commit_hour(
    lake_root: str, batch: CleanBatch, bronze_hour: str, gate: Optional[Gate] = None, publish: bool = True
) -> SilverCommit:
    """Gate ``batch`` (all shards of ``bronze_hour``), then publish it; see the module docstring.

    ``batch.silver``: the candidates as ``HourRows`` (the job's staged shards, read part by part) or
    one table. With ``publish=False`` (``lake validate silver --hour``) the batch is gated and nothing
    is written.
    """
    silver = batch.silver if isinstance(batch.silver, HourRows) else HourRows.of(batch.silver)
    batch = resolve_lone_positions(lake_root, batch)
    quarantine = batch.quarantine.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
    check_existing_tables(lake_root)  # an incompatible table fails here, before anything is written
    stats = without_partition_counts(batch.stats)
    if gate is not None:
        outcome = gate(silver.chunks(CHUNK_ROWS), quarantine, batch.stats, bronze_hour)
        stats["gate_warnings"] = len(getattr(outcome, "warnings", ()))
    if not publish:
        return SilverCommit(0, 0, quarantine.num_rows, False, stats)
    inserted, replaced, read_version = _merge_silver(lake_root, silver, batch.dates)
    written = _replace_quarantine(lake_root, quarantine, bronze_hour)
    _record_ledger(lake_root, batch, silver, bronze_hour)
    if replaced:
        ledger.record_displaced(lake_root, _displaced(lake_root, silver, batch.dates, read_version))
    stats["inserted"] = inserted
    stats["replaced"] = replaced
    already = silver.num_rows - inserted - replaced
    stats["already_in_silver"] = already
    return SilverCommit(inserted, already, quarantine.num_rows, written, stats)
