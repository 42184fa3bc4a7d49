"""The conservation ledger: ``_ledger/hours`` (SQL ``ledger_hours``), contract section 10.

One row per hour, Bronze generation and Kafka partition (``LEDGER_HOURS_SCHEMA``),
holding the figures of three equations (``lake_schemas.ledger.EQUATIONS``):

- the ingest's, from Bronze itself: the offset ranges in the file names of
  the ingest passes that wrote into the hour (a pass names the whole range
  it consumed of a partition in each of its files), the rows of those files
  in this hour and in the others, the gaps recorded under ``_ledger/gaps``
  and the rows ``lake forget`` erased (the ``_COMPLETE`` marker keeps them);
- Silver's, written by the Silver job when it publishes the Bronze hour
  (``record_silver_hour``): rows that became Silver rows (counted in Silver
  by the lineage columns ``bronze_hour``/``bronze_file``/``kafka_partition``),
  quarantined rows (counted in the quarantine), and what the job itself
  counted as duplicates and paired positions (rows no table keeps);
- Gold's, written by the Gold job (``record_gold_day``): for each hour of
  the day in event time, Silver's rows and Gold's ``event_count``, given to
  a partition through the Silver rows of each vehicle and hour.

Every write is an upsert keyed by (hour, generation, partition) of only the
writing stage's columns, so re-running a job rewrites its figures and never
adds a row. ``check_hours`` (``lake ledger``) recomputes every figure a table
can give from the tables as they are now, takes the rest (duplicates, paired
positions, when each stage published) from the ledger, and evaluates the
equations: a Bronze file or a Silver row changed behind the jobs' backs shows
as an imbalance, an erasure by ``lake forget`` does not (it is counted), and
Silver rows that reached Silver after Gold last aggregated their day are
reported as *late* (Gold's recompute is due), not as an imbalance.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lake_core.bronze.layout import read_json, read_marker
from lake_core.delta import date_list_sql, open_table, with_commit_retries
from lake_core.delta_read import read_columns
from lake_core.storage import filesystem, fs_path, is_local, write_atomically
from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.ledger import EQUATIONS, Equation
from lake_schemas.paths import DAY_MS, HOUR_MS, PARQUET_TABLES, format_hour, hour_partition, join
from lake_schemas.tables import LEDGER_HOURS_SCHEMA

__all__ = [
    "LedgerRow",
    "LedgerReport",
    "ledger_table",
    "record_silver_hour",
    "record_gold_day",
    "record_displaced",
    "record_erasure",
    "check_hours",
    "hours_of_day",
]

LOG = logging.getLogger(__name__)
KEY = ("hour", "generation", "kafka_partition")
INGEST_COLUMNS = (
    "kafka_topic",
    "offsets_first",
    "offsets_last",
    "offsets_consumed",
    "other_hours_rows",
    "gap_records",
    "bronze_rows",
    "rejects",
    "erased_bronze",
    "erased_rejects",
)
SILVER_COLUMNS = ("silver_new", "quarantined", "duplicates", "paired_positions", "erased_silver", "silver_published_at")
GOLD_COLUMNS = ("silver_rows", "gold_event_count", "gold_published_at")
#: Silver's counts the tables cannot give back: they are taken from the ledger when checking.
SILVER_CLAIMS = ("duplicates", "paired_positions")


def ledger_table(lake_root: str) -> Any:
    return open_table(
        LakePaths(lake_root).table("ledger_hours"),
        LEDGER_HOURS_SCHEMA,
        "ledger_hours",
        partition_by=["day"],
        description="per hour and Kafka partition: where every record went (contract section 10)",
    )


def hours_of_day(day: _dt.date) -> list:
    start = int(_dt.datetime.combine(day, _dt.time(0), _dt.timezone.utc).timestamp() * 1000)
    return [format_hour(start + i * HOUR_MS) for i in range(24)]


def _hour_ms(hour: str) -> int:
    return int(_dt.datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=_dt.timezone.utc).timestamp() * 1000)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


# -- the ingest's figures, from Bronze ---------------------------------------------------------


@dataclass
class _File:
    table: str
    hour_ms: int
    name: BronzeFileName
    path: str


def _list_hour(fs: pafs.FileSystem, lake_root: str, table: str, hour_ms: int, cache: Optional[dict] = None) -> list:
    if cache is not None and (table, hour_ms) in cache:
        return cache[(table, hour_ms)]
    directory = fs_path(lake_root, join(LakePaths(lake_root).table(table), hour_partition(hour_ms)))
    found = []
    for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
        name = BronzeFileName.parse(info.base_name)
        if info.type == pafs.FileType.File and name is not None:
            found.append(_File(table, hour_ms, name, info.path))
    if cache is not None:
        cache[(table, hour_ms)] = found
    return found


def _list_all(fs: pafs.FileSystem, lake_root: str) -> list:
    found = []
    for table in sorted(PARQUET_TABLES):
        base = fs_path(lake_root, LakePaths(lake_root).table(table))
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
            name = BronzeFileName.parse(info.base_name)
            if info.type != pafs.FileType.File or name is None or "hour=" not in info.path:
                continue
            found.append(_File(table, _hour_ms_of_path(info.path), name, info.path))
    return found


def _hour_ms_of_path(path: str) -> int:
    parts = dict(p.split("=", 1) for p in path.split("/") if "=" in p)
    return int(
        _dt.datetime(
            int(parts["year"]), int(parts["month"]), int(parts["day"]), int(parts["hour"]), tzinfo=_dt.timezone.utc
        ).timestamp()
        * 1000
    )


def _group(f: _File) -> tuple:
    n = f.name
    return (n.generation, n.partition, n.first_offset, n.last_offset, n.count)


def _rows(fs: pafs.FileSystem, path: str) -> int:
    with fs.open_input_file(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def _erased_by_file(fs: pafs.FileSystem, lake_root: str, hours: Iterable[int]) -> dict:
    """``{(table, hour_ms, file name): rows lake forget erased}`` from the hours' ``_COMPLETE`` markers."""
    erased: dict = {}
    for hour_ms in hours:
        marker = read_marker(fs, fs_path(lake_root, LakePaths(lake_root).complete_marker(hour_ms))) or {}
        for entry in marker.get("files", []):
            if entry.get("erased_rows"):
                erased[(entry.get("table", "bronze_telemetry"), hour_ms, entry["file"])] = int(entry["erased_rows"])
    return erased


def _gaps(fs: pafs.FileSystem, lake_root: str, hour: str) -> list:
    directory = fs_path(lake_root, join(lake_root, "_ledger", "gaps"))
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    gaps = [read_json(fs, i.path) for i in infos if i.base_name.endswith(".json")]
    return [g for g in gaps if g and g.get("hour") == hour]


def _no_ingest() -> dict:
    return {**dict.fromkeys(INGEST_COLUMNS, 0), "kafka_topic": None}


def ingest_figures(lake_root: str, hour: str, listings: Optional[dict] = None) -> dict:
    """``{(generation, partition): {ingest column: value}}`` of the Bronze hour ``hour``, as Bronze is now.

    ``listings`` caches hour folders' listings between calls (``check_hours`` over a day).
    """
    fs, _ = filesystem(lake_root)
    hour_ms = _hour_ms(hour)
    here = [f for t in sorted(PARQUET_TABLES) for f in _list_hour(fs, lake_root, t, hour_ms, listings)]
    groups = {_group(f) for f in here}
    # A pass's files are in the hours its records' timestamps fell in: nearly always this one and the
    # next; a replay of old data can spread one pass wider, which the full listing finds.
    nearby = [
        f
        for h in range(hour_ms - DAY_MS, hour_ms + DAY_MS + 1, HOUR_MS)
        if h != hour_ms
        for t in sorted(PARQUET_TABLES)
        for f in _list_hour(fs, lake_root, t, h, listings)
        if _group(f) in groups
    ]
    siblings = here + nearby
    if any(sum(1 for f in siblings if _group(f) == g) < g[4] for g in groups):
        siblings = [f for f in _list_all(fs, lake_root) if _group(f) in groups]
    erased = _erased_by_file(fs, lake_root, {f.hour_ms for f in siblings})
    figures: dict = defaultdict(_no_ingest)
    firsts: dict = {}
    for g in sorted(groups):
        generation, partition, first, last, _n = g
        row = figures[(generation, partition)]
        row["offsets_consumed"] += last - first + 1
        lo, hi = firsts.get((generation, partition), (first, last))
        firsts[(generation, partition)] = (min(lo, first), max(hi, last))
    for f in siblings:
        row = figures[(f.name.generation, f.name.partition)]
        rows = _rows(fs, f.path)
        gone = erased.get((f.table, f.hour_ms, f.path.rsplit("/", 1)[1]), 0)
        if f.hour_ms != hour_ms:
            row["other_hours_rows"] += rows + gone
        elif f.table == "bronze_telemetry":
            row["bronze_rows"] += rows
            row["erased_bronze"] += gone
        else:
            row["rejects"] += rows
            row["erased_rejects"] += gone
    for gap in _gaps(fs, lake_root, hour):
        key = (int(gap.get("generation", 0)), int(gap["partition"]))
        row = figures[key]
        row["gap_records"] += int(gap["records"])
        row["offsets_consumed"] += int(gap["records"])
        lo, hi = firsts.get(key, (int(gap["first_offset"]), int(gap["last_offset"])))
        firsts[key] = (min(lo, int(gap["first_offset"])), max(hi, int(gap["last_offset"])))
    for key, (lo, hi) in firsts.items():
        figures[key]["offsets_first"], figures[key]["offsets_last"] = lo, hi
    topic = _topic(fs, here)
    for row in figures.values():
        row["kafka_topic"] = topic
    return dict(figures)


def _topic(fs: pafs.FileSystem, files: list) -> Optional[str]:
    for f in files:
        with fs.open_input_file(f.path) as handle:
            column = pq.read_table(handle, columns=["kafka_topic"])["kafka_topic"]
        if len(column):
            return str(column[0])
    return None


# -- Silver's figures, from Silver and the quarantine (their lineage columns) ------------------


def _generation(bronze_file: Any) -> pa.ChunkedArray:
    """Bronze generation from file names (``g0001-p...``; 0 without the prefix or the name)."""
    if isinstance(bronze_file, pa.Array):
        bronze_file = pa.chunked_array([bronze_file])
    if not pa.types.is_dictionary(bronze_file.type):
        bronze_file = pc.dictionary_encode(bronze_file)
    chunks = []
    for chunk in bronze_file.chunks:  # parsed once per distinct name, then spread by the codes
        names = pc.fill_null(chunk.dictionary, "")
        has = pc.starts_with(names, "g")
        digits = pc.if_else(has, pc.utf8_slice_codeunits(names, 1, 5), "0")
        per_name = pc.if_else(has, pc.cast(digits, pa.int32()), pa.scalar(0, pa.int32()))
        chunks.append(pc.fill_null(per_name.take(chunk.indices), 0))
    return pa.chunked_array(chunks, pa.int32())


def _equals(column: pa.ChunkedArray, value: str) -> pa.ChunkedArray:
    """``column == value`` for a dictionary column: compared once per distinct value, spread by the codes."""
    if not pa.types.is_dictionary(column.type):
        return pc.equal(column, value)
    return pa.chunked_array(
        [pc.fill_null(pc.equal(c.dictionary, value).take(c.indices), False) for c in column.chunks], pa.bool_()
    )


def _count_by(table: pa.Table, keys: list) -> dict:
    if table.num_rows == 0:
        return {}
    grouped = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    columns = [grouped[k].to_pylist() for k in keys]
    return {tuple(k): n for *k, n in zip(*columns, grouped["count_all"].to_pylist())}


def silver_figures(lake_root: str, hour: str) -> dict:
    """``{(generation, partition): {"silver_new", "quarantined"}}``: Silver's and the quarantine's rows
    of Bronze hour ``hour`` now."""
    predicate = f"bronze_hour = '{hour}'"
    figures: dict = defaultdict(lambda: {"silver_new": 0, "quarantined": 0})
    for name, column in (("silver_telemetry", "silver_new"), ("silver_quarantine", "quarantined")):
        rows = read_columns(
            lake_root, name, ["bronze_hour", "bronze_file", "kafka_partition"], predicate,
            dictionary=("bronze_hour", "bronze_file"),
        )  # fmt: skip
        rows = rows.filter(_equals(rows["bronze_hour"], hour))
        rows = pa.table({"generation": _generation(rows["bronze_file"]), "partition": rows["kafka_partition"]})
        for (generation, partition), n in _count_by(rows, ["generation", "partition"]).items():
            figures[(generation, partition)][column] += n
    return dict(figures)


# -- Gold's figures: hours of event time -------------------------------------------------------


def silver_event_hour_counts(lake_root: str, day: _dt.date, by_bronze_hour: bool = True) -> dict:
    """Silver's rows of ``day`` counted by ``(event hour, vehicle, generation, partition, bronze hour)``.

    The Silver half of ``event_hour_figures``: the Gold job counts it while its gate runs.
    """
    columns = ["vehicle_id", "event_ts", "event_date", "kafka_partition", "bronze_file"]
    silver = read_columns(
        lake_root,
        "silver_telemetry",
        columns + (["bronze_hour"] if by_bronze_hour else []),
        date_list_sql("event_date", [day]),
        dictionary=("vehicle_id", "bronze_file", "bronze_hour"),
    ).unify_dictionaries()  # grouped by below: one dictionary per column
    of_day = pc.equal(silver["event_date"], pa.scalar(day, pa.date32()))
    if not pc.all(of_day).as_py():  # the partition's files hold only the day: no copy of a million rows
        silver = silver.filter(of_day)
    event_ms = pc.cast(pc.cast(silver["event_ts"], pa.timestamp("ms")), pa.int64()).to_numpy(zero_copy_only=False)
    keyed = pa.table(
        {
            "hour": pa.array(event_ms - event_ms % HOUR_MS, pa.int64()),  # formatted once per hour, below
            "vehicle_id": silver["vehicle_id"],
            "generation": _generation(silver["bronze_file"]),
            "partition": silver["kafka_partition"],
            "bronze_hour": silver["bronze_hour"] if by_bronze_hour else pa.nulls(silver.num_rows, pa.string()),
        }
    )
    counted = _count_by(keyed, ["hour", "vehicle_id", "generation", "partition", "bronze_hour"])
    return {(format_hour(h), v, g, p, b or ""): n for (h, v, g, p, b), n in counted.items()}


def event_hour_figures(
    lake_root: str, day: _dt.date, by_bronze_hour: bool = True, silver_counts: Optional[dict] = None
) -> dict:
    """``{(hour, generation, partition): {"silver_rows", "gold_event_count", "late_by_bronze_hour"}}``.

    Gold has no partition; each vehicle-hour's ``event_count`` is given to the partitions its
    Silver rows came from, as many as each holds, and a difference from Silver's count to the
    vehicle's first partition (a vehicle-hour Silver does not hold: partition -1).
    ``by_bronze_hour=False`` (what the Gold job records) leaves ``late_by_bronze_hour`` empty.
    ``silver_counts``: ``silver_event_hour_counts``'s result, when already counted.
    """
    by_source = silver_event_hour_counts(lake_root, day, by_bronze_hour) if silver_counts is None else silver_counts
    gold = read_columns(
        lake_root,
        "gold_vehicle_hourly",
        ["vehicle_id", "hour_start", "event_date", "event_count"],
        date_list_sql("event_date", [day]),
    )
    gold = gold.filter(pc.equal(gold["event_date"], pa.scalar(day, pa.date32())))
    gold_counts = dict(
        zip(
            zip(pc.strftime(gold["hour_start"], format="%Y-%m-%dT%H").to_pylist(), gold["vehicle_id"].to_pylist()),
            gold["event_count"].to_pylist(),
        )
    )
    figures: dict = defaultdict(lambda: {"silver_rows": 0, "gold_event_count": 0, "late_by_bronze_hour": {}})
    per_vehicle: dict = defaultdict(lambda: defaultdict(int))
    for (h, vehicle, generation, partition, bronze_hour), n in by_source.items():
        row = figures[(h, generation, partition)]
        row["silver_rows"] += n
        row["late_by_bronze_hour"][bronze_hour] = row["late_by_bronze_hour"].get(bronze_hour, 0) + n
        per_vehicle[(h, vehicle)][(generation, partition)] += n
    for (h, vehicle), count in gold_counts.items():
        sources = per_vehicle.get((h, vehicle))
        if not sources:
            figures[(h, 0, -1)]["gold_event_count"] += int(count)
            continue
        for key, n in sources.items():
            figures[(h, *key)]["gold_event_count"] += n
        first = min(sources)
        figures[(h, *first)]["gold_event_count"] += int(count) - sum(sources.values())
    return dict(figures)


# -- erasures (lake forget) --------------------------------------------------------------------


def _erasures_dir(lake_root: str) -> str:
    return join(lake_root, "_ledger", "erasures")


def silver_rows_of_vehicle(lake_root: str, vehicle_id: str) -> dict:
    """``{(bronze hour, generation, partition): rows}`` of ``vehicle_id`` in Silver and the quarantine."""
    found: dict = defaultdict(int)
    for name in ("silver_telemetry", "silver_quarantine"):
        rows = read_columns(lake_root, name, ["vehicle_id", "bronze_hour", "bronze_file", "kafka_partition"], "TRUE")
        rows = rows.filter(pc.equal(rows["vehicle_id"], vehicle_id))
        keyed = pa.table(
            {
                "hour": pc.fill_null(rows["bronze_hour"], ""),
                "generation": _generation(rows["bronze_file"]),
                "partition": rows["kafka_partition"],
            }
        )
        for key, n in _count_by(keyed, ["hour", "generation", "partition"]).items():
            found[key] += n
    return dict(found)


def record_erasure(lake_root: str, vehicle_id: str, rows: dict) -> Optional[str]:
    """Record, before ``lake forget`` deletes them, the Silver and quarantine rows of ``vehicle_id``
    per (bronze hour, generation, partition). Idempotent: each count keeps its largest value, so
    forgetting again (nothing left to delete) changes nothing."""
    if not rows:
        return None
    fs, _ = filesystem(lake_root)
    directory = fs_path(lake_root, _erasures_dir(lake_root))
    path = f"{directory}/{vehicle_id}.json"
    before = read_json(fs, path) or {"vehicle_id": vehicle_id, "rows": []}
    merged = {(r["hour"], r["generation"], r["partition"]): int(r["rows"]) for r in before.get("rows", [])}
    for key, n in rows.items():
        merged[key] = max(merged.get(key, 0), int(n))
    body = {
        "vehicle_id": vehicle_id,
        "recorded_at": _now().isoformat(timespec="seconds"),
        "rows": [{"hour": h, "generation": g, "partition": p, "rows": n} for (h, g, p), n in sorted(merged.items())],
    }
    fs.create_dir(directory, recursive=True)
    write_atomically(fs, path, json.dumps(body, indent=1).encode(), is_local(lake_root))
    return path


def erased_silver(lake_root: str, hour: str) -> dict:
    """``{(generation, partition): Silver and quarantine rows lake forget erased}`` of Bronze hour ``hour``."""
    fs, _ = filesystem(lake_root)
    directory = fs_path(lake_root, _erasures_dir(lake_root))
    found: dict = defaultdict(int)
    for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
        if not info.base_name.endswith(".json"):
            continue
        for r in (read_json(fs, info.path) or {}).get("rows", []):
            if r["hour"] == hour:
                found[(int(r["generation"]), int(r["partition"]))] += int(r["rows"])
    return dict(found)


# -- writing -----------------------------------------------------------------------------------


def _upsert(lake_root: str, rows: list, columns: Iterable[str], what: str) -> None:
    """Insert ``rows`` (dicts), or set only ``columns`` of the rows already there (same key)."""
    if not rows:
        return
    source = pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in LEDGER_HOURS_SCHEMA} for r in rows], schema=LEDGER_HOURS_SCHEMA
    )
    days = {r["day"] for r in rows}
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in KEY) + " AND " + date_list_sql("t.day", days)

    def merge() -> None:
        (
            ledger_table(lake_root)
            .merge(source, predicate=predicate, source_alias="s", target_alias="t")
            .when_matched_update(updates={c: f"s.{c}" for c in columns})
            .when_not_matched_insert_all()
            .execute()
        )

    with_commit_retries(merge, what)


def _key_row(hour: str, generation: int, partition: int) -> dict:
    return {
        "hour": hour,
        "day": _dt.date.fromisoformat(hour[:10]),
        "generation": generation,
        "kafka_partition": partition,
    }


def record_silver_hour(lake_root: str, hour: str, duplicates: dict, paired: dict, candidates: dict) -> list:
    """Write the ingest's and Silver's figures of Bronze hour ``hour``, after Silver published it.

    ``duplicates``, ``paired`` and ``candidates`` are the job's counts by (generation, partition):
    rows it dropped as copies, lon signals folded into their lat's row, rows it offered to Silver.
    A candidate Silver did not take from this hour is a copy of a row Silver holds from another
    record: a duplicate too. Returns the rows written.
    """
    ingest = ingest_figures(lake_root, hour)
    silver = silver_figures(lake_root, hour)
    erased = erased_silver(lake_root, hour)
    now = _now()
    rows = []
    for key in sorted(set(ingest) | set(silver) | set(duplicates) | set(paired) | set(candidates)):
        held = silver.get(key, {"silver_new": 0, "quarantined": 0})
        row = _key_row(hour, *key)
        row.update(ingest.get(key, _no_ingest()))
        row.update(
            silver_new=held["silver_new"],
            quarantined=held["quarantined"],
            duplicates=duplicates.get(key, 0) + max(0, candidates.get(key, 0) - held["silver_new"]),
            paired_positions=paired.get(key, 0),
            erased_silver=erased.get(key, 0),
            silver_published_at=now,
        )
        rows.append(row)
    _upsert(lake_root, rows, INGEST_COLUMNS + SILVER_COLUMNS, f"record Silver's figures of {hour} in ledger_hours")
    return rows


def record_displaced(lake_root: str, displaced: dict) -> list:
    """Move Silver rows an earlier-ingested copy replaced from their hour's new rows to its duplicates.

    ``displaced`` is ``{(bronze hour, generation, partition): rows}``: copies a Silver job of an
    earlier hour, published later, replaced (first ingested wins).
    """
    stored = _stored(lake_root, {_dt.date.fromisoformat(h[:10]) for h, _g, _p in displaced})
    rows = []
    for hour in sorted({h for h, _g, _p in displaced}):
        now = silver_figures(lake_root, hour)
        for (h, generation, partition), n in sorted(displaced.items()):
            if h != hour or (hour, generation, partition) not in stored:
                continue
            row = dict(stored[(hour, generation, partition)])
            row["duplicates"] = (row.get("duplicates") or 0) + n
            row["silver_new"] = now.get((generation, partition), {}).get("silver_new", 0)
            rows.append(row)
    _upsert(lake_root, rows, ("silver_new", "duplicates"), "move replaced Silver rows to duplicates in ledger_hours")
    return rows


def record_gold_day(lake_root: str, day: _dt.date, silver_counts: Optional[dict] = None) -> list:
    """Write Silver's rows and Gold's ``event_count`` of each hour of ``day``, after Gold published it.

    ``silver_counts``: ``silver_event_hour_counts(lake_root, day, False)``, when the caller counted it already.
    """
    now = _now()
    rows = []
    figures_by_key = event_hour_figures(lake_root, day, False, silver_counts)
    for (hour, generation, partition), figures in sorted(figures_by_key.items()):
        row = _key_row(hour, generation, partition)
        row.update(silver_rows=figures["silver_rows"], gold_event_count=figures["gold_event_count"])
        row["gold_published_at"] = now
        rows.append(row)
    _upsert(lake_root, rows, GOLD_COLUMNS, f"record Gold's figures of {day} in ledger_hours")
    return rows


# -- checking ----------------------------------------------------------------------------------


@dataclass
class EquationResult:
    name: str
    equation: str
    left: int
    right: int
    terms: dict  # column -> value, negative for a column the equation subtracts
    status: str  # "ok" | "pending" | "late" | "imbalance"
    note: str = ""

    @property
    def holds(self) -> bool:
        return self.status != "imbalance"


@dataclass
class LedgerRow:
    hour: str
    generation: int
    kafka_partition: int
    figures: dict
    equations: list = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(e.holds for e in self.equations)


@dataclass
class LedgerReport:
    hours: list
    rows: list

    @property
    def imbalances(self) -> list:
        return [(r, e) for r in self.rows for e in r.equations if not e.holds]

    @property
    def holds(self) -> bool:
        return not self.imbalances

    def to_json(self) -> dict:
        return {
            "hours": self.hours,
            "balanced": self.holds,
            "rows": [
                {
                    "hour": r.hour,
                    "generation": r.generation,
                    "kafka_partition": r.kafka_partition,
                    "figures": r.figures,
                    "equations": [
                        {
                            "name": e.name,
                            "equation": e.equation,
                            "left": e.left,
                            "right": e.right,
                            "terms": e.terms,
                            "status": e.status,
                            "note": e.note,
                        }
                        for e in r.equations
                    ],
                }
                for r in self.rows
            ],
        }

    def describe_imbalances(self) -> str:
        return "; ".join(
            f"{e.name}: {e.equation} does not hold for hour {r.hour} partition {r.kafka_partition}"
            f"{f' (generation {r.generation})' if r.generation else ''}: {e.left} != {e.right}"
            for r, e in self.imbalances
        )


def _stored(lake_root: str, days: set) -> dict:
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table("ledger_hours")
    if not DeltaTable.is_deltatable(path):
        return {}
    rows = read_columns(lake_root, "ledger_hours", LEDGER_HOURS_SCHEMA.names, date_list_sql("day", days))
    return {(r["hour"], r["generation"], r["kafka_partition"]): r for r in rows.to_pylist()}


def _evaluate(eq: Equation, figures: dict) -> EquationResult:
    """``eq`` on ``figures``; ``terms`` are signed (a subtracted column's value is negative)."""
    terms = {t.lstrip("-"): (-1 if t.startswith("-") else 1) * int(figures.get(t.lstrip("-")) or 0) for t in eq.terms}
    left = int(figures.get(eq.left) or 0)
    right = sum(terms.values())
    return EquationResult(eq.name, eq.describe(), left, right, terms, "ok" if left == right else "imbalance")


def check_hours(lake_root: str, hours: list) -> LedgerReport:
    """Recompute and check the ledger of ``hours`` (``2026-03-01T08``...) against the tables as they are."""
    days = {_dt.date.fromisoformat(h[:10]) for h in hours}
    stored = _stored(lake_root, days)
    published = _silver_published_times(lake_root)
    events: dict = {}
    for day in days:
        events.update(event_hour_figures(lake_root, day))
    report = LedgerReport(list(hours), [])
    listings: dict = {}
    for hour in hours:
        ingest = ingest_figures(lake_root, hour, listings)
        silver = silver_figures(lake_root, hour)
        erased = erased_silver(lake_root, hour)
        keys = (
            set(ingest)
            | set(silver)
            | {k[1:] for k in stored if k[0] == hour}
            | {k[1:] for k in events if k[0] == hour}
        )
        for key in sorted(keys):
            mine = stored.get((hour, *key), {})
            figures: dict = {"kafka_topic": mine.get("kafka_topic")}
            figures.update(ingest.get(key, _no_ingest()))
            if figures.get("kafka_topic") is None:
                figures["kafka_topic"] = mine.get("kafka_topic")
            held = silver.get(key, {"silver_new": 0, "quarantined": 0})
            figures.update(held)
            figures["erased_silver"] = erased.get(key, 0)
            for c in SILVER_CLAIMS:
                figures[c] = mine.get(c)
            event = events.get((hour, *key), {"silver_rows": 0, "gold_event_count": 0, "late_by_bronze_hour": {}})
            figures["silver_rows"] = event["silver_rows"]
            figures["gold_event_count"] = event["gold_event_count"]
            figures["silver_published_at"] = _iso(mine.get("silver_published_at"))
            figures["gold_published_at"] = _iso(mine.get("gold_published_at"))
            row = LedgerRow(hour, key[0], key[1], figures)
            for eq in EQUATIONS:
                result = _evaluate(eq, figures)
                if eq.name == "ingest" and key not in ingest and result.left == result.right:
                    result.note = "no Bronze files of this partition in the hour"
                elif eq.name == "silver" and mine.get("silver_published_at") is None:
                    result.status, result.note = "pending", "Silver has not published this Bronze hour"
                elif eq.name == "gold" and result.status == "imbalance":
                    gold_at = _gold_published(stored, hour)
                    late = _late_rows(event["late_by_bronze_hour"], published, gold_at) if gold_at else 0
                    if gold_at is None:
                        result.status, result.note = "pending", "Gold has not aggregated this day"
                    elif late and result.left == result.right - late:
                        result.status = "late"
                        result.note = f"{late} Silver row(s) arrived after Gold aggregated the day: recompute it"
                row.equations.append(result)
            report.rows.append(row)
    return report


def _iso(value: Any) -> Optional[str]:
    return value.isoformat() if value is not None else None


def _gold_published(stored: dict, hour: str) -> Optional[_dt.datetime]:
    day = hour[:10]
    times = [
        r["gold_published_at"] for (h, _g, _p), r in stored.items() if h[:10] == day and r.get("gold_published_at")
    ]
    return max(times) if times else None


def _silver_published_times(lake_root: str) -> dict:
    """``{bronze hour: when Silver last published it}`` over the whole ledger (a few rows per hour)."""
    rows = read_columns(lake_root, "ledger_hours", ["hour", "silver_published_at"], "TRUE")
    times: dict = {}
    for hour, at in zip(rows["hour"].to_pylist(), rows["silver_published_at"].to_pylist()):
        if at is not None and (hour not in times or at > times[hour]):
            times[hour] = at
    return times


def _late_rows(by_bronze_hour: dict, published: dict, gold_at: _dt.datetime) -> int:
    """Silver rows (by Bronze hour) that Silver published after Gold aggregated the day."""
    return sum(n for bronze_hour, n in by_bronze_hour.items() if (published.get(bronze_hour) or gold_at) > gold_at)
