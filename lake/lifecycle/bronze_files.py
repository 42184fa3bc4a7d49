"""Bronze and rejects as files: which hour folders exist, what each holds, the ingest groups.

The streaming ingest's checkpoint is the files themselves (see
``beam_pipelines.ingest.bronze_state``): a pass writes one group of files
``p{part}-{first}-{last}-{i}of{n}.parquet`` over the hours (and both tables)
it touched, a group with fewer than ``n`` files is deleted on the next
start and its offsets are read again, and each Kafka partition resumes after
its latest group. Whatever deletes or rewrites Bronze files must respect
that, so this module shows the files the way recovery sees them.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.paths import PARQUET_TABLES, partition_hour_ms
from lake_schemas.storage import filesystem, fs_path

from ..errors import LakeDataError

__all__ = ["HourFolder", "GroupKey", "list_hours", "group_key", "parquet_errors"]

GroupKey = tuple  # (partition, first_offset, last_offset, count): one ingest pass of one Kafka partition


@dataclass
class HourFolder:
    """One ``year=/month=/day=/hour=`` folder of one Parquet table."""

    table: str  # "bronze_telemetry" | "bronze_rejects"
    hour_ms: int
    path: str  # inside the filesystem
    files: list = field(default_factory=list)  # pafs.FileInfo of every file below it, markers included

    def data_files(self) -> list:
        return [f for f in self.files if f.base_name.endswith(".parquet") and not f.base_name.startswith((".", "_"))]

    def groups(self) -> set:
        return {group_key(name) for name in (BronzeFileName.parse(f.base_name) for f in self.files) if name}


def group_key(name: BronzeFileName) -> GroupKey:
    return (name.partition, name.first_offset, name.last_offset, name.count)


def list_hours(lake_root: str) -> list:
    """Every hour folder of both Parquet tables, sorted by (table, hour)."""
    fs, _ = filesystem(lake_root)
    paths = LakePaths(lake_root)
    hours: dict = {}
    for table in sorted(PARQUET_TABLES):
        base = fs_path(lake_root, paths.table(table))
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        by_hour = defaultdict(list)
        folders = {}
        for info in fs.get_file_info(selector):
            relative = info.path[len(base):].strip("/")
            parts = relative.split("/")
            if len(parts) < 4:
                continue
            try:
                hour_ms = partition_hour_ms("/".join(parts[:4]))
            except ValueError:
                continue  # not a partition folder of ours: left alone
            folders[hour_ms] = f"{base}/{'/'.join(parts[:4])}"
            if info.type == pafs.FileType.File:
                by_hour[hour_ms].append(info)
        for hour_ms, folder in folders.items():
            hours[(table, hour_ms)] = HourFolder(table, hour_ms, folder, by_hour[hour_ms])
    return [hours[k] for k in sorted(hours)]


@contextmanager
def parquet_errors(what: str):
    """A Bronze file that is not readable Parquet (or vanished meanwhile) as a one-line ``LakeDataError``."""
    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LakeDataError(f"{what}: {first}") from None
