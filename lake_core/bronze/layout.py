"""Bronze and rejects as files: names, ingest groups, hour folders and ``_COMPLETE`` markers.

The one reader of Bronze's layout: the ingest (``beam_pipelines.ingest``),
Silver and the gates (``lake_core.bronze.hour_files``), the lifecycle
(``lake.lifecycle``) and the DAGs (``lake_core.bronze.readiness``) all go
through it. File names are ``lake_schemas.BronzeFileName``.

The streaming ingest's checkpoint is the files themselves (see
``beam_pipelines.ingest.bronze_state``): a pass writes one group of files
``p{part}-{first}-{last}-{i}of{n}.parquet`` over the hours (and both tables)
it touched, a group with fewer than ``n`` files is deleted on the next
start and its offsets are read again, and each Kafka partition resumes after
its latest group. Whatever deletes or rewrites Bronze files must respect
that, so this module shows the files the way recovery sees them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import pyarrow as pa
import pyarrow.fs as pafs

from lake_core.errors import LakeDataError
from lake_core.storage import filesystem, fs_path, write_atomically
from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.paths import COMPLETE_MARKER, PARQUET_TABLES, partition_hour_ms

__all__ = [
    "BronzeFile",
    "HourFolder",
    "GroupKey",
    "DICTIONARY_COLUMNS",
    "bronze_file",
    "list_hours",
    "group_key",
    "parquet_errors",
    "read_json",
    "read_marker",
    "write_marker",
    "marker_files",
]

#: Bronze columns Parquet dictionary-encodes (few distinct values); rewriters keep the ingest's choice.
DICTIONARY_COLUMNS = ["kafka_topic", "vehicle_id", "key", "reason"]

#: (generation, partition, first_offset, last_offset, count): one ingest pass of one Kafka partition
GroupKey = tuple


@dataclass(frozen=True)
class BronzeFile:
    """One data file of an ingest group."""

    table: str  # "bronze_telemetry" | "bronze_rejects"
    path: str  # inside the filesystem
    hour_ms: int
    name: BronzeFileName
    size: Optional[int] = None  # bytes, as listed

    @property
    def group(self) -> GroupKey:
        return group_key(self.name)


def bronze_file(table: str, info: pafs.FileInfo) -> Optional[BronzeFile]:
    """``info`` as a file of an ingest group, or None (a marker, a temporary file, a stranger)."""
    name = BronzeFileName.parse(info.base_name)
    if name is None:
        return None
    try:
        hour = partition_hour_ms(info.path)
    except ValueError:
        return None
    return BronzeFile(table, info.path, hour, name, info.size)


def read_json(fs: pafs.FileSystem, path: str) -> Optional[dict[str, Any]]:
    """The JSON object at ``path`` (a marker, a record); None when there is none; ``LakeDataError`` otherwise."""
    try:
        with fs.open_input_stream(path) as f:
            body = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LakeDataError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(body, dict):
        raise LakeDataError(f"{path} is not readable JSON: not an object")
    return body


def read_marker(fs: pafs.FileSystem, path: str) -> Optional[dict[str, Any]]:
    """The ``_COMPLETE`` marker at ``path``; None when there is none; ``LakeDataError`` when unreadable."""
    return read_json(fs, path)


def write_marker(fs: pafs.FileSystem, path: str, marker: dict[str, Any], local: bool) -> None:
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    write_atomically(fs, path, json.dumps(marker, indent=1).encode(), local=local)


def marker_files(marker: dict[str, Any], table: str = "bronze_telemetry") -> set[str]:
    """The names of ``table``'s files a marker lists."""
    try:
        return {e["file"] for e in marker.get("files", []) if e.get("table", "bronze_telemetry") == table}
    except (KeyError, TypeError, AttributeError) as exc:
        raise LakeDataError(f"a {COMPLETE_MARKER} marker lists its files wrongly: {exc}") from None


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
    return (name.generation, name.partition, name.first_offset, name.last_offset, name.count)


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
            relative = info.path[len(base) :].strip("/")
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
def parquet_errors(what: str) -> Iterator[None]:
    """A Bronze file that is not readable Parquet (or vanished meanwhile) as a one-line ``LakeDataError``."""
    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LakeDataError(f"{what}: {first}") from None
