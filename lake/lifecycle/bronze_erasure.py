"""Erase one vehicle's rows from Bronze and rejects, keeping the ingest's checkpoint intact.

The streaming ingest's checkpoint is the file names (``lake_core.bronze.layout``): a
group with a file missing is deleted on the next start and its offsets read
again. So a file is rewritten in place under its own name (written beside
it under a hidden ``.inprogress`` name, then renamed over it; one PUT on
object stores), never deleted: a file left without rows stays as a zero-row
file with the same schema and metadata (the ingest's watermark is kept
there). The hour's ``_COMPLETE`` marker is updated to match: each rewritten
file's ``rows`` becomes what it now holds and ``erased_rows`` counts what
erasure removed, so ``rows + erased_rows`` is still what the ingest wrote.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lake.lifecycle.vehicle_rows import row_filter
from lake_core.bronze.layout import DICTIONARY_COLUMNS, list_hours, parquet_errors, read_marker, write_marker
from lake_core.storage import filesystem, fs_path, is_local, write_atomically
from lake_schemas import LakePaths
from lake_schemas.paths import PARQUET_TABLES

__all__ = ["BronzeErasure", "erase_vehicle"]


@dataclass
class BronzeErasure:
    rows: dict = field(default_factory=dict)  # table -> rows of the vehicle (deleted, or found in a dry run)
    files: dict = field(default_factory=dict)  # table -> files rewritten (or that would be)


def _matches_by_file(lake_root: str, table: str, vehicle_id: str) -> dict:
    """``{file path: rows of the vehicle}`` for one Parquet table (only the columns the rule needs are read)."""
    fs, _ = filesystem(lake_root)
    base = fs_path(lake_root, LakePaths(lake_root).table(table))
    if fs.get_file_info(base).type.name == "NotFound":
        return {}
    with parquet_errors(f"listing {base}"):
        dataset = ds.dataset(
            base, filesystem=fs, format="parquet", exclude_invalid_files=False, ignore_prefixes=[".", "_"]
        )
    columns = [c for c in ("vehicle_id", "key", "payload") if c in dataset.schema.names]
    with parquet_errors(f"scanning {base} for the vehicle's rows (nothing was rewritten)"):
        found = dataset.to_table(columns=["__filename"], filter=row_filter(vehicle_id, columns))
    if found.num_rows == 0:
        return {}
    counts = found["__filename"].value_counts().to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def _rewrite_without(lake_root: str, path: str, vehicle_id: str) -> int:
    """Rewrite ``path`` without the vehicle's rows; return how many rows it now holds."""
    fs, _ = filesystem(lake_root)
    with parquet_errors(f"reading {path} (left as it was)"), fs.open_input_file(path) as f:
        parquet = pq.ParquetFile(f)
        compression = (
            parquet.metadata.row_group(0).column(0).compression.lower() if parquet.metadata.num_row_groups else "zstd"
        )
        table = parquet.read()  # keeps the schema's metadata (the ingest's watermark)
    kept = table.filter(~row_filter(vehicle_id, table.column_names))
    buffer = pa.BufferOutputStream()
    pq.write_table(
        kept, buffer, compression=compression, use_dictionary=[c for c in DICTIONARY_COLUMNS if c in kept.column_names]
    )
    write_atomically(fs, path, buffer.getvalue().to_pybytes(), local=is_local(lake_root))
    return kept.num_rows


def _update_marker(lake_root: str, marker_path: str, rows_now: dict) -> None:
    """Record the rewritten files' row counts (``{(table, file name): rows}``) in an hour's ``_COMPLETE``."""
    fs, _ = filesystem(lake_root)
    marker = read_marker(fs, marker_path)
    if marker is None:
        return  # an open hour: its marker, written later, will count the files as they are
    total_delta = 0
    for entry in marker.get("files", []):
        key = (entry.get("table", "bronze_telemetry"), entry.get("file"))
        if key not in rows_now or "rows" not in entry:
            continue
        written = entry["rows"] + entry.get("erased_rows", 0)  # what the ingest wrote: constant
        total_delta += rows_now[key] - entry["rows"]
        entry["rows"], entry["erased_rows"] = rows_now[key], written - rows_now[key]
    if total_delta == 0:
        return
    if "rows" in marker:
        marker["rows"] += total_delta
    write_marker(fs, marker_path, marker, local=is_local(lake_root))


def erase_vehicle(lake_root: str, vehicle_id: str, dry_run: bool, progress: Callable[[str], None]) -> BronzeErasure:
    """Remove the vehicle's rows from every Bronze and rejects file (see the module docstring)."""
    result = BronzeErasure()
    touched = defaultdict(dict)  # hour start -> {(table, file name): rows now}
    hour_of = {}
    for folder in list_hours(lake_root):
        for info in folder.files:
            hour_of[info.path] = folder.hour_ms
    for table in sorted(PARQUET_TABLES, reverse=True):  # bronze_telemetry, then bronze_rejects
        matches = _matches_by_file(lake_root, table, vehicle_id)
        result.rows[table] = sum(matches.values())
        result.files[table] = len(matches)
        if dry_run or not matches:
            continue
        for i, path in enumerate(sorted(matches), start=1):
            rows_now = _rewrite_without(lake_root, path, vehicle_id)
            if path in hour_of:
                touched[hour_of[path]][(table, path.rsplit("/", 1)[1])] = rows_now
            if i % 100 == 0 or i == len(matches):
                progress(f"  {table}: {i}/{len(matches)} files rewritten")
    for hour, rows_now in sorted(touched.items()):
        _update_marker(lake_root, fs_path(lake_root, LakePaths(lake_root).complete_marker(hour)), rows_now)
    return result
