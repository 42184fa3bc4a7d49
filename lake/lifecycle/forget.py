"""``lake forget --vehicle V``: erase one vehicle from every layer (the GDPR right to erasure).

    from lake.lifecycle.forget import forget_vehicle
    print(forget_vehicle("lake_data", "V000123", reason="ticket 4711").summary())

Which rows are the vehicle's: ``lake.lifecycle.vehicle_rows`` (its
``vehicle_id`` or Kafka key; for a row whose vehicle is unknown, a raw
payload naming it as a JSON string). In this order, so that a Silver or Gold
job running meanwhile cannot bring the rows back from a layer not yet
erased:

1. **Bronze and rejects** (Parquet): every file holding the vehicle is
   rewritten in place without its rows (the ingest's checkpoint is the file
   names: see ``lake.lifecycle.bronze_erasure``).
2. **silver/telemetry, silver/quarantine** (Delta delete).
3. **gold/zone_hourly**: aggregates over vehicles, but a zone-hour the
   vehicle was alone in shows where it was, and the others count it: the
   hours it was active in are recomputed from Silver without it
   (``lake.lifecycle.zone_recompute``).
4. **gold/vehicle_hourly, gold/vehicle_state, dims/vehicles** (Delta delete).
5. **Vacuum** of every Delta table with retention 0: a delete only writes a
   new version, the old versions' files still hold the rows until vacuumed.
   This ends time travel to versions before the erasure, lake-wide. Files no
   commit references (left by a failed commit) go too once an hour old; a
   younger one may be a running job's commit in flight, and deleting it
   would corrupt that table, so it is left to the next ``lake maintain``.

Every run appends to ``{LAKE_ROOT}/_audit/forget.jsonl``: time (UTC),
vehicle id, reason, who asked, rows deleted and files rewritten per table,
and each Delta table's version after. Keeping the erased vehicle's id there
is standard practice: it proves the erasure was done, and is the list to
apply again (below). A dry run counts and writes nothing, audit included.
Forgetting twice is harmless: the second run deletes 0 rows and is audited.

Known limits:

- The Kafka topic keeps the vehicle's messages until its own retention
  expires; an ingest reading them again (a replay, a reset Bronze), or the
  simulator and ``lake registry import`` registering the id again, would
  bring rows back. Keep the topic's retention under the erasure deadline,
  and run ``lake forget`` again for the audited ids after a replay.
- A Silver or Gold job that read the vehicle's rows before they were
  erased and commits after would write them back: run ``lake forget`` while
  the hourly and daily jobs are paused (or run it again once they finished).
- Delta log entries (``_delta_log/*.json``) keep the column statistics
  (min/max values) of the files they added until ``lake maintain`` drops
  expired log entries (``delta.logRetentionDuration``, 30 days).
- Great Expectations results under ``_quality/`` may quote up to 5 sample
  values of a failed expectation; they are not rewritten.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from beam_pipelines.silver import corrected_index
from lake.lifecycle import audit, bronze_erasure, delta_maintenance, zone_recompute
from lake.lifecycle.checks import check_vehicle_id, require_lake
from lake.lifecycle.vehicle_rows import BY_PAYLOAD, delta_predicate, plain_strings, row_filter
from lake_core import ledger
from lake_core.delta import with_commit_retries
from lake_core.settings import normalize_root
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.paths import PARQUET_TABLES

__all__ = ["forget_vehicle", "ForgetReport", "TableErasure", "AUDIT_LOG", "DELETE_ORDER", "ORPHAN_GRACE_HOURS"]

AUDIT_LOG = "forget"
#: Delta tables a vehicle's rows are deleted from, in this order (zone_hourly is recomputed between).
DELETE_ORDER = ["silver_telemetry", "silver_quarantine", "gold_vehicle_hourly", "gold_vehicle_state", "dims_vehicles"]
VACUUMED = [
    "silver_telemetry",
    "silver_quarantine",
    "gold_vehicle_hourly",
    "gold_zone_hourly",
    "gold_vehicle_state",
    "dims_vehicles",
]
#: Files no commit references are only vacuumed once this old: a younger one may be a commit in flight.
ORPHAN_GRACE_HOURS = 1


@dataclass
class TableErasure:
    table: str
    present: bool = True
    rows_deleted: int = 0  # a dry run: rows that would be deleted
    files_rewritten: int = 0  # Bronze: files rewritten in place; Delta: files the delete replaced
    files_vacuumed: int = 0
    version_after: Optional[int] = None
    zone_hours_recomputed: int = 0  # gold_zone_hourly only

    def describe(self) -> str:
        if not self.present:
            return f"{self.table}: absent"
        text = f"{self.table}: {self.rows_deleted:,} rows, {self.files_rewritten:,} files rewritten"
        if self.table == "gold_zone_hourly":
            text = f"{self.table}: {self.zone_hours_recomputed:,} hours recomputed ({self.rows_deleted:,} rows fewer)"
        if self.table not in PARQUET_TABLES:
            text += f", {self.files_vacuumed:,} files vacuumed, version {self.version_after}"
        return text


@dataclass
class ForgetReport:
    vehicle_id: str
    lake_root: str
    reason: Optional[str]
    requested_by: str
    dry_run: bool
    ts: str = ""
    seconds: float = 0.0
    tables: list = field(default_factory=list)

    def table(self, name: str) -> TableErasure:
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(name)

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted for t in self.tables if t.table != "gold_zone_hourly")

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        head = (
            f"forget {self.vehicle_id} in {self.lake_root}: {verb} {self.rows_deleted:,} rows"
            + (" (DRY RUN: nothing was changed)" if self.dry_run else "")
            + f", {self.seconds:.1f} s"
        )
        return "\n".join([head, *(f"  {t.describe()}" for t in self.tables)])

    def to_record(self) -> dict:
        record = asdict(self)
        record["rows_deleted"] = self.rows_deleted
        record["tables"] = {t["table"]: {k: v for k, v in t.items() if k != "table"} for t in record["tables"]}
        return record


def _requested_by(requested_by: Optional[str]) -> str:
    if requested_by:
        return requested_by
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _count_delta_rows(lake_root: str, name: str, vehicle_id: str) -> int:
    """Rows a delete would remove (dry runs): read only the columns the rule needs."""
    path = LakePaths(lake_root).table(name)
    if name in BY_PAYLOAD:  # rows without a vehicle id: statistics cannot prune, read the (small) table
        rows = plain_strings(delta_dataset(path).to_table(columns=["vehicle_id", "payload"]))
        return rows.filter(row_filter(vehicle_id, rows.column_names)).num_rows
    return zone_recompute.vehicle_rows(lake_root, name, vehicle_id, ["vehicle_id"]).num_rows


def _delete_rows(lake_root: str, name: str, vehicle_id: str, dry_run: bool) -> TableErasure:
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table(name)
    if not DeltaTable.is_deltatable(path):
        return TableErasure(name, present=False)
    if dry_run:
        return TableErasure(name, rows_deleted=_count_delta_rows(lake_root, name, vehicle_id))
    predicate = delta_predicate(vehicle_id, name)
    with delta_maintenance.delta_errors(f"delete {vehicle_id} from {path}"):
        metrics = with_commit_retries(lambda: DeltaTable(path).delete(predicate), f"delete {vehicle_id} from {name}")
    return TableErasure(
        name,
        rows_deleted=int(metrics.get("num_deleted_rows", 0)),
        files_rewritten=int(metrics.get("num_removed_files", 0)),
    )


def _vacuum(lake_root: str, name: str, dry_run: bool) -> int:
    """Delete every file the current version does not need, then unreferenced ones past the grace period."""
    path = LakePaths(lake_root).table(name)
    removed = delta_maintenance.vacuum(path, 0, dry_run, full=False)
    orphans = delta_maintenance.vacuum(path, ORPHAN_GRACE_HOURS, dry_run, full=True)
    return len(set(removed) | set(orphans))


def forget_vehicle(
    lake_root: str,
    vehicle_id: str,
    *,
    reason: Optional[str] = None,
    requested_by: Optional[str] = None,
    dry_run: bool = False,
    progress: Callable[[str], None] = print,
) -> ForgetReport:
    """Erase ``vehicle_id`` from every table of ``lake_root``; see the module docstring.

    Raises ``ConfigError`` (nothing touched) for an id the contract does not
    allow or a lake root that does not exist. A vehicle the lake does not
    know deletes 0 rows and is audited all the same.
    """

    check_vehicle_id(vehicle_id)
    root = normalize_root(lake_root)
    require_lake(root)
    started = time.monotonic()
    report = ForgetReport(
        vehicle_id,
        root,
        reason,
        _requested_by(requested_by),
        dry_run,
        ts=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    verb = "counting" if dry_run else "erasing"
    hours = zone_recompute.vehicle_hours(root, vehicle_id)  # before Silver and Gold lose them

    if not dry_run:  # counted before anything is deleted, so the ledger's hours stay balanced
        ledger.record_erasure(root, vehicle_id, ledger.silver_rows_of_vehicle(root, vehicle_id))
    progress(f"{verb} {vehicle_id} in bronze and rejects")
    bronze = bronze_erasure.erase_vehicle(root, vehicle_id, dry_run, progress)
    for name in sorted(PARQUET_TABLES, reverse=True):
        report.tables.append(TableErasure(name, rows_deleted=bronze.rows[name], files_rewritten=bronze.files[name]))

    for name in DELETE_ORDER:
        if name == "gold_vehicle_hourly":  # zone_hourly first: it needs Silver without the vehicle
            progress(f"recomputing gold_zone_hourly for {len(hours)} hour(s) {vehicle_id} was active in")
            zone = zone_recompute.recompute_zone_hours(root, hours, vehicle_id, dry_run)
            report.tables.append(
                TableErasure(
                    "gold_zone_hourly",
                    present=delta_maintenance.open_delta(LakePaths(root).table("gold_zone_hourly")) is not None,
                    rows_deleted=zone["rows_before"] - zone["rows_after"],
                    zone_hours_recomputed=zone["hours"],
                )
            )
        progress(f"{verb} {vehicle_id} in {name}")
        report.tables.append(_delete_rows(root, name, vehicle_id, dry_run))

    if not dry_run:  # the index of corrected events names the vehicle's events too (beam_pipelines.silver)
        if corrected_index.forget_vehicle(root, vehicle_id):
            delta_maintenance.vacuum(corrected_index.index_path(root), 0, False, full=False)
    for erasure in report.tables:
        if erasure.table in VACUUMED and erasure.present:
            erasure.files_vacuumed = _vacuum(root, erasure.table, dry_run)
            erasure.version_after = delta_maintenance.open_delta(LakePaths(root).table(erasure.table)).version()
    progress(f"vacuumed {sum(t.files_vacuumed for t in report.tables):,} files no current version needs")
    report.tables.sort(key=lambda t: _TABLE_ORDER.index(t.table))
    report.seconds = round(time.monotonic() - started, 3)
    if not dry_run:
        record = report.to_record()
        audit.append_record(root, AUDIT_LOG, {"ts": record.pop("ts"), **record})
    return report


_TABLE_ORDER = ["bronze_telemetry", "bronze_rejects", *VACUUMED]
