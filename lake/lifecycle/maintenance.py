"""``lake maintain``: retention, compaction and vacuum of every table of the lake.

    from lake.lifecycle.maintenance import maintain
    report = maintain("lake_data", now=data_interval_end)   # what the telemetry_maintenance DAG runs
    print(report.summary())

What one run does, table by table:

- **Bronze and rejects** (Parquet): hour folders wholly older than
  ``bronze_days`` are deleted with their ``_COMPLETE`` marker, except the
  hours the streaming ingest's checkpoint still needs (see
  ``lake.lifecycle.bronze_retention``); they go on a later run. Bronze is
  never compacted: its file names are the ingest's checkpoint.
- **Delta tables**: ``event_date`` partitions wholly older than the limit
  are deleted (Silver and its quarantine: ``silver_days``; Gold hourly
  tables: ``gold_days``; ``gold/vehicle_state`` and ``dims/vehicles`` hold
  one row per vehicle and never expire: ``lake forget`` removes a vehicle).
  Then small files are compacted (``optimize.compact``), then files no
  version of the last ``vacuum_hours`` needs are vacuumed, including files
  no commit references (a commit that lost a race leaves its files behind;
  only deltalake's ``full`` vacuum finds them). Last, the log is
  checkpointed so that log entries past ``delta.logRetentionDuration`` (30
  days) can be dropped.

Vacuum retention below 168 hours is refused unless forced: a reader still
scanning an older version, or a job whose commit is in flight (its files
are written before the commit names them), would lose files under it.

The retention limits count from ``now`` (the DAG passes its data interval
end, so a re-run decides the same); vacuum's ``vacuum_hours`` count from the
wall clock, as deltalake measures them. Every operation that has nothing to
do commits nothing, so running maintenance twice changes nothing the second
time. A dry run reads and reports, and writes nothing (no audit line either).
Each real run appends its report to ``{LAKE_ROOT}/_audit/maintenance.jsonl``.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from lake.lifecycle import audit, bronze_retention, delta_maintenance
from lake.lifecycle.checks import require_lake, utc_now
from lake.lifecycle.limits import (
    DEFAULT_BRONZE_DAYS,
    DEFAULT_GOLD_DAYS,
    DEFAULT_SILVER_DAYS,
    DEFAULT_VACUUM_HOURS,
    MIN_VACUUM_HOURS,
)
from lake_core.errors import ConfigError
from lake_core.settings import normalize_root
from lake_schemas import LakePaths
from lake_schemas.paths import PARQUET_TABLES, format_hour, hour_of_ms

__all__ = [
    "maintain",
    "MaintenanceReport",
    "TableMaintenance",
    "DELTA_RETENTION",
    "AUDIT_LOG",
    "DEFAULT_BRONZE_DAYS",
    "DEFAULT_SILVER_DAYS",
    "DEFAULT_GOLD_DAYS",
    "DEFAULT_VACUUM_HOURS",
]

AUDIT_LOG = "maintenance"

#: Delta table -> the retention that applies to it (None: never expires), in the order maintenance visits them.
DELTA_RETENTION = {
    "silver_telemetry": "silver",
    "silver_quarantine": "silver",
    "gold_vehicle_hourly": "gold",
    "gold_zone_hourly": "gold",
    "gold_vehicle_state": None,
    "dims_vehicles": None,
}


@dataclass
class TableMaintenance:
    """What maintenance did to one table (or would do, in a dry run)."""

    table: str
    present: bool = True
    expires_before: Optional[str] = None  # partitions before this date (Delta) or hour (Bronze) expire
    partitions_removed: int = 0
    rows_removed: int = 0
    files_before: int = 0  # data files before compaction (after retention)
    files_after: int = 0  # data files after compaction (a dry run: deltalake's planner, estimated)
    files_vacuumed: int = 0  # files deleted by vacuum (a dry run: that vacuum would delete)
    version_before: Optional[int] = None
    version_after: Optional[int] = None
    checkpointed: bool = False
    held_back: list = field(default_factory=list)  # Bronze hours kept past their retention, and why
    seconds: float = 0.0

    def describe(self) -> str:
        if not self.present:
            return f"{self.table}: absent"
        parts = []
        if self.expires_before is None:
            parts.append("never expires")
        else:
            parts.append(
                f"retention (before {self.expires_before}): {self.partitions_removed:,} partitions, "
                f"{self.rows_removed:,} rows"
            )
        if self.table in PARQUET_TABLES:
            parts.append(f"{self.files_before:,} -> {self.files_after:,} files")
        else:
            parts.append(f"compaction {self.files_before:,} -> {self.files_after:,} files")
            parts.append(f"vacuum {self.files_vacuumed:,} files")
            parts.append(f"version {self.version_before} -> {self.version_after}")
        if self.held_back:
            parts.append(
                f"held back {len(self.held_back)} expired hour(s): {'; '.join(self.held_back[:3])}"
                + (" ..." if len(self.held_back) > 3 else "")
            )
        return f"{self.table}: " + "; ".join(parts) + f" ({self.seconds:.1f} s)"


@dataclass
class MaintenanceReport:
    lake_root: str
    now: str  # the instant retention counted from, ISO UTC
    dry_run: bool
    limits: dict  # bronze_days, silver_days, gold_days, vacuum_hours
    started_at: str = ""
    seconds: float = 0.0
    tables: list = field(default_factory=list)  # TableMaintenance, in the order visited

    def table(self, name: str) -> TableMaintenance:
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(name)

    @property
    def rows_removed(self) -> int:
        return sum(t.rows_removed for t in self.tables)

    @property
    def files_vacuumed(self) -> int:
        return sum(t.files_vacuumed for t in self.tables)

    def summary(self) -> str:
        head = (
            f"maintenance of {self.lake_root} as of {self.now}"
            + (" (DRY RUN: nothing was changed)" if self.dry_run else "")
            + f", {self.seconds:.1f} s"
        )
        return "\n".join([head, *(f"  {t.describe()}" for t in self.tables)])

    def to_record(self) -> dict:
        record = asdict(self)
        record["tables"] = {t["table"]: {k: v for k, v in t.items() if k != "table"} for t in record["tables"]}
        return record


def _check_limits(bronze_days, silver_days, gold_days, vacuum_hours, force: bool) -> None:
    for name, value in (("bronze_days", bronze_days), ("silver_days", silver_days), ("gold_days", gold_days)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a whole number of days >= 1, got {value!r}")
    # not `vacuum_hours < 0`: NaN compares False with everything and would pass every guard below
    if (
        not isinstance(vacuum_hours, (int, float))
        or isinstance(vacuum_hours, bool)
        or not math.isfinite(vacuum_hours)
        or not vacuum_hours >= 0
    ):
        raise ConfigError(f"vacuum_hours must be a number of hours >= 0, got {vacuum_hours!r}")
    if vacuum_hours < MIN_VACUUM_HOURS and not force:
        raise ConfigError(
            f"vacuum retention {vacuum_hours:g} h is under {MIN_VACUUM_HOURS} h: a reader still on an "
            f"older table version, or a job whose commit is in flight (its files are written before the commit "
            f"names them), could lose files under it. Pass --force if no job or reader uses the lake meanwhile"
        )


def maintain(
    lake_root: str,
    *,
    now: Optional[_dt.datetime] = None,
    bronze_days: int = DEFAULT_BRONZE_DAYS,
    silver_days: int = DEFAULT_SILVER_DAYS,
    gold_days: int = DEFAULT_GOLD_DAYS,
    vacuum_hours: float = DEFAULT_VACUUM_HOURS,
    dry_run: bool = False,
    progress: Callable[[str], None] = print,
    force: bool = False,
) -> MaintenanceReport:
    """Apply retention, compact and vacuum every table of ``lake_root``; see the module docstring.

    ``now``: an aware datetime (None: the current UTC time). ``force``
    allows ``vacuum_hours`` under 168. Raises ``ConfigError`` (nothing
    touched) for bad limits or a lake root that does not exist, and a
    ``LakeError`` when a table cannot be maintained.
    """

    _check_limits(bronze_days, silver_days, gold_days, vacuum_hours, force)
    root = normalize_root(lake_root)
    require_lake(root)
    now = utc_now(now)
    started = time.monotonic()
    report = MaintenanceReport(
        lake_root=root,
        now=now.isoformat().replace("+00:00", "Z"),
        dry_run=dry_run,
        limits={
            "bronze_days": bronze_days,
            "silver_days": silver_days,
            "gold_days": gold_days,
            "vacuum_hours": vacuum_hours,
        },
        started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    progress(f"maintaining {root} as of {report.now}" + (" (dry run)" if dry_run else ""))
    report.tables.extend(_maintain_bronze(root, now - _dt.timedelta(days=bronze_days), dry_run, progress))
    days = {"silver": silver_days, "gold": gold_days}
    for name, retention in DELTA_RETENTION.items():
        cutoff = None if retention is None else (now - _dt.timedelta(days=days[retention])).date()
        report.tables.append(_maintain_delta(root, name, cutoff, vacuum_hours, dry_run, progress))
    report.seconds = round(time.monotonic() - started, 3)
    if not dry_run:
        record = report.to_record()
        audit.append_record(root, AUDIT_LOG, {"ts": record.pop("started_at"), **record})
    return report


def _maintain_bronze(root: str, cutoff: _dt.datetime, dry_run: bool, progress) -> list:
    started = time.monotonic()
    plan = bronze_retention.plan_retention(root, cutoff)
    expires = format_hour(hour_of_ms(plan.cutoff_ms))
    progress(
        f"bronze: {len(plan.expired)} hour(s) before {expires} expire"
        + (f", {len(plan.held)} held back for the ingest's checkpoint" if plan.held else "")
    )
    if not dry_run and plan.expired:
        bronze_retention.apply_retention(root, plan, progress)
    reports = []
    for name in ("bronze_telemetry", "bronze_rejects"):
        expiry = plan.tables[name]
        reports.append(
            TableMaintenance(
                name,
                expires_before=expires,
                partitions_removed=expiry.partitions,
                rows_removed=expiry.rows,
                files_before=expiry.files_before,
                files_after=expiry.files_before - expiry.files,
                held_back=plan.held_text() if name == "bronze_telemetry" else [],
                seconds=round(time.monotonic() - started, 3),
            )
        )
    return reports


def _maintain_delta(
    root: str, name: str, cutoff: Optional[_dt.date], vacuum_hours: float, dry_run: bool, progress
) -> TableMaintenance:
    started = time.monotonic()
    path = LakePaths(root).table(name)
    table = delta_maintenance.open_delta(path)
    if table is None:
        return TableMaintenance(name, present=False)
    result = TableMaintenance(
        name, expires_before=cutoff.isoformat() if cutoff else None, version_before=table.version()
    )
    if cutoff is not None:
        result.partitions_removed, result.rows_removed = delta_maintenance.expire_before(path, cutoff, dry_run)
        if result.partitions_removed:
            progress(
                f"{name}: {result.partitions_removed} partition(s) before {cutoff} "
                + ("expire" if dry_run else "deleted")
                + f" ({result.rows_removed:,} rows)"
            )
    if dry_run:
        result.files_before, result.files_after = delta_maintenance.estimate_compacted(table, cutoff)
    else:
        result.files_before, result.files_after = delta_maintenance.compact(path)
    progress(
        f"{name}: compaction {result.files_before:,} -> {result.files_after:,} files"
        + (" (estimated)" if dry_run else "")
    )
    result.files_vacuumed = len(delta_maintenance.vacuum(path, vacuum_hours, dry_run))
    progress(
        f"{name}: vacuum ({vacuum_hours:g} h) "
        + ("would delete" if dry_run else "deleted")
        + f" {result.files_vacuumed:,} files"
    )
    if not dry_run:
        result.checkpointed = delta_maintenance.checkpoint_log(path)
    result.version_after = delta_maintenance.open_delta(path).version()
    result.seconds = round(time.monotonic() - started, 3)
    return result
