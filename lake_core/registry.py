"""The vehicle registry, ``dims/vehicles`` (contract section 5): which vehicle is what.

Writes are a Delta MERGE on ``vehicle_id``: running them again changes
nothing, a vehicle keeps the ``registered_at`` it was first given, and a
changed ``vehicle_type`` is updated in place.
"""

from __future__ import annotations

import csv
import datetime as _dt
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import pyarrow as pa

from lake_core.errors import LakeDataError
from lake_core.storage import delta_dataset
from lake_schemas import REGISTRY_SCHEMA, LakePaths
from lake_schemas.messages import VEHICLE_ID_PATTERN, is_vehicle_id

_MAX_REPORTED = 10  # bad rows named in one error message


class RegistryWrite(NamedTuple):
    inserted: int
    updated: int
    unchanged: int

    def __str__(self) -> str:
        return f"{self.inserted:,} new, {self.updated:,} updated, {self.unchanged:,} unchanged"


def registry_path(lake_root: str) -> str:
    return LakePaths(lake_root).table("dims_vehicles")


def upsert_vehicles(
    lake_root: str, vehicle_ids: Sequence[str], vehicle_types: Sequence[str], registered_at_ms: Optional[int] = None
) -> RegistryWrite:
    """Insert new vehicles, update changed types, keep every first ``registered_at``.

    ``vehicle_ids`` must be unique. ``registered_at_ms`` defaults to now.
    """
    from deltalake import DeltaTable, write_deltalake

    if registered_at_ms is None:
        registered_at_ms = int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)
    source = pa.table(
        {
            "vehicle_id": pa.array(list(vehicle_ids), pa.string()),
            "vehicle_type": pa.array(list(vehicle_types), pa.string()),
            "registered_at": pa.array([registered_at_ms] * len(vehicle_ids), pa.timestamp("ms", tz="UTC")),
        },
        schema=REGISTRY_SCHEMA,
    )
    path = registry_path(lake_root)
    if not DeltaTable.is_deltatable(path):
        write_deltalake(
            path, source, mode="error", name="dims_vehicles", description="vehicle registry: vehicle_id -> vehicle_type"
        )
        return RegistryWrite(source.num_rows, 0, 0)
    metrics = (
        DeltaTable(path)
        .merge(source, predicate="t.vehicle_id = s.vehicle_id", source_alias="s", target_alias="t")
        .when_matched_update(updates={"vehicle_type": "s.vehicle_type"}, predicate="t.vehicle_type <> s.vehicle_type")
        .when_not_matched_insert_all()
        .execute()
    )
    inserted = int(metrics.get("num_target_rows_inserted", 0))
    updated = int(metrics.get("num_target_rows_updated", 0))
    return RegistryWrite(inserted, updated, source.num_rows - inserted - updated)


def read_registry(lake_root: str) -> pa.Table:
    """The registry as an Arrow table (empty, with its schema, when there is none yet)."""
    from deltalake import DeltaTable

    path = registry_path(lake_root)
    if not DeltaTable.is_deltatable(path):
        return REGISTRY_SCHEMA.empty_table()
    # Through pyarrow's filesystem: deltalake's own one aborts the process at exit.
    return delta_dataset(path).to_table(columns=REGISTRY_SCHEMA.names).cast(REGISTRY_SCHEMA)


def import_registry_csv(
    lake_root: str, path: Union[str, Path], registered_at_ms: Optional[int] = None
) -> RegistryWrite:
    """Load a fleet list (columns ``vehicle_id,vehicle_type``) into the registry.

    Every row is checked first: a bad vehicle id, an empty type, a missing
    value, or one id listed with two types raises ``LakeDataError`` naming
    the lines, and the table is left untouched. Types are lower-cased; an id
    listed twice with the same type counts once.
    """
    ids, types = _read_fleet_csv(Path(path))
    return upsert_vehicles(lake_root, ids, types, registered_at_ms)


def _read_fleet_csv(path: Path) -> tuple[list[str], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise LakeDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LakeDataError(f"{path}: cannot read it as UTF-8 CSV ({exc})") from None
    if not rows:
        raise LakeDataError(f"{path}: empty file; expected a header vehicle_id,vehicle_type")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("vehicle_id", "vehicle_type") if c not in header]
    if missing:
        raise LakeDataError(
            f"{path}: line 1: missing column(s) {', '.join(missing)} (the header must name vehicle_id and vehicle_type)"
        )
    id_col, type_col = header.index("vehicle_id"), header.index("vehicle_type")

    problems: list[str] = []
    first_seen: dict[str, tuple[int, str]] = {}  # vehicle id -> (line, type)
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) <= max(id_col, type_col):
            problems.append(f"line {line}: {len(row)} column(s), expected at least {len(header)}")
            continue
        vid, vtype = row[id_col].strip(), row[type_col].strip().lower()
        if not is_vehicle_id(vid):
            problems.append(f"line {line}: vehicle_id {vid!r} does not match {VEHICLE_ID_PATTERN}")
            continue
        if not vtype:
            problems.append(f"line {line}: empty vehicle_type for {vid}")
            continue
        seen = first_seen.get(vid)
        if seen is None:
            first_seen[vid] = (line, vtype)
        elif seen[1] != vtype:
            problems.append(f"lines {seen[0]} and {line}: {vid} listed as {seen[1]!r} and {vtype!r}")
    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        more = f"; and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise LakeDataError(f"{path}: {len(problems)} bad row(s), registry left unchanged: {shown}{more}")
    if not first_seen:
        raise LakeDataError(f"{path}: no vehicles listed")
    return list(first_seen), [t for _, t in first_seen.values()]
