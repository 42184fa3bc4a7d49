"""Bronze retention: delete whole hour folders (Bronze and rejects, ``_COMPLETE`` included) past the limit.

An hour expires when all of it is older than the cutoff (``hour end <=
now - days``). Three kinds of expired hours are kept anyway, because
deleting them would make the ingest re-read Kafka (see ``lake_core.bronze.layout``):

- ``resume point``: the hour holds a file of its Kafka partition's latest
  group; the ingest resumes after that group, and without it would start
  the partition again from offset 0;
- ``group spans a kept hour``: one pass wrote the group over this hour and
  a newer one; deleting only this hour's file leaves an incomplete group,
  which the ingest deletes on start (newer data included) and reads again.

They go on a later run, once the rest of their group has expired too.
Rejects share Bronze's hours and groups, so an hour's two folders go
together.
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lake_core.bronze.layout import group_key, list_hours, parquet_errors
from lake_core.storage import filesystem
from lake_schemas import BronzeFileName
from lake_schemas.paths import HOUR_MS, PARQUET_TABLES, format_hour

__all__ = ["BronzeRetentionPlan", "plan_retention", "apply_retention"]

HELD_RESUME = "resume point of Kafka partition(s) {}"
HELD_GROUP = "an ingest group spans a kept hour"


@dataclass
class TableExpiry:
    partitions: int = 0  # hour folders
    files: int = 0  # data files
    rows: int = 0
    files_before: int = 0


@dataclass
class BronzeRetentionPlan:
    cutoff_ms: int
    expired: list = field(default_factory=list)  # hour starts (ms) to delete
    held: dict = field(default_factory=dict)  # hour start (ms) -> why it stays
    folders: dict = field(default_factory=dict)  # hour start -> [folder paths]
    tables: dict = field(default_factory=dict)  # table -> TableExpiry

    def held_text(self) -> list:
        return [f"{format_hour(h)} ({why})" for h, why in sorted(self.held.items())]


def plan_retention(lake_root: str, cutoff: _dt.datetime) -> BronzeRetentionPlan:
    """What ``apply_retention`` would delete for ``cutoff``; reads only listings and Parquet footers."""
    fs, _ = filesystem(lake_root)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    plan = BronzeRetentionPlan(cutoff_ms, tables={t: TableExpiry() for t in sorted(PARQUET_TABLES)})
    folders = list_hours(lake_root)
    hours_of_group = defaultdict(set)
    groups_of_hour = defaultdict(set)
    latest: dict = {}  # (generation, Kafka partition) -> its latest group
    for folder in folders:
        plan.tables[folder.table].files_before += len(folder.data_files())
        for info in folder.files:
            name = BronzeFileName.parse(info.base_name)
            if name is None:
                continue
            key = group_key(name)
            hours_of_group[key].add(folder.hour_ms)
            groups_of_hour[folder.hour_ms].add(key)
            stream = (name.generation, name.partition)
            if stream not in latest or name.last_offset > latest[stream][3]:
                latest[stream] = key
    all_hours = {f.hour_ms for f in folders}
    expired = {h for h in all_hours if h + HOUR_MS <= cutoff_ms}

    for (_generation, partition), key in sorted(latest.items()):
        for hour in hours_of_group[key] & expired:
            plan.held.setdefault(hour, set()).add(partition)
    plan.held = {h: HELD_RESUME.format(", ".join(map(str, sorted(p)))) for h, p in plan.held.items()}
    changed = True
    while changed:  # a held hour keeps its groups whole, which may hold further hours
        changed = False
        kept = (all_hours - expired) | set(plan.held)
        for hour in sorted(expired - set(plan.held)):
            if any(hours_of_group[g] & kept for g in groups_of_hour[hour]):
                plan.held[hour] = HELD_GROUP
                changed = True

    plan.expired = sorted(expired - set(plan.held))
    doomed = set(plan.expired)
    for folder in folders:
        if folder.hour_ms not in doomed:
            continue
        plan.folders.setdefault(folder.hour_ms, []).append(folder.path)
        expiry = plan.tables[folder.table]
        expiry.partitions += 1
        for info in folder.data_files():
            expiry.files += 1
            with (
                parquet_errors(f"reading the footer of {info.path} (nothing was deleted)"),
                fs.open_input_file(info.path) as f,
            ):
                expiry.rows += pq.ParquetFile(f).metadata.num_rows
    return plan


def apply_retention(lake_root: str, plan: BronzeRetentionPlan, progress: Callable[[str], None]) -> None:
    """Delete the plan's hour folders, oldest first, then the day/month/year folders left empty."""
    fs, _ = filesystem(lake_root)
    for i, hour in enumerate(plan.expired, start=1):
        # Bronze first (its _COMPLETE goes with it), then rejects; a run killed in between is finished by the next.
        for path in sorted(plan.folders[hour], key=lambda p: "_rejects" in p):
            fs.delete_dir(path)
            _remove_empty_parents(fs, path)
        if i % 24 == 0 or i == len(plan.expired):
            progress(f"  bronze: {i}/{len(plan.expired)} expired hours deleted (up to {format_hour(hour)})")


def _remove_empty_parents(fs: pafs.FileSystem, path: str) -> None:
    for _ in range(3):  # day=, month=, year=
        path = path.rsplit("/", 1)[0]
        if fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            return
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)
