"""What Bronze already holds: resume offsets, watermarks, complete hours.

Bronze is its own checkpoint. File names carry the Kafka partition and the
offset range of the pass that wrote them (``lake_schemas.BronzeFileName``),
so on start the pipeline deletes the files of a pass killed mid-commit and
resumes each partition after the last offset a complete group holds. No
consumer-group offsets, no side database: what is in Bronze is what was read.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.paths import COMPLETE_MARKER, hour_partition, partition_hour_ms
from lake_schemas.storage import filesystem, fs_path

LOG = logging.getLogger(__name__)

HOUR_MS = 3_600_000
WATERMARK_KEY = b"lake.watermark_ms"
IN_PROGRESS_SUFFIX = ".inprogress"


@dataclass(frozen=True)
class BronzeFile:
    table: str  # "bronze_telemetry" | "bronze_rejects"
    path: str  # inside the filesystem
    hour_ms: int
    name: BronzeFileName


@dataclass
class BronzeState:
    """What a pass needs to know before it starts."""

    next_offsets: dict = field(default_factory=dict)  # partition -> first offset to read
    watermarks: dict = field(default_factory=dict)  # partition -> max record timestamp (ms) seen
    open_from_ms: Optional[int] = None  # start of the earliest hour still open
    complete_hours: set = field(default_factory=set)
    open_hours: set = field(default_factory=set)


class BronzeStore:
    """Bronze and rejects of one lake, as files."""

    def __init__(self, lake_root: str):
        self.paths = LakePaths(lake_root)
        self.fs, _ = filesystem(lake_root)
        self._root = lake_root
        self.tables = {
            "bronze_telemetry": fs_path(lake_root, self.paths.bronze),
            "bronze_rejects": fs_path(lake_root, self.paths.rejects),
        }

    # -- listing -----------------------------------------------------------
    # An ingest asks what Bronze holds before and after every pass. Hours
    # before the earliest open one never change (writers only add to open
    # hours), so after one full listing a store re-lists only the days from
    # that hour on: a pass costs the same on day 1 and on day 90.
    def _list(self, base: str) -> list:
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        return [info for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File]

    def _subdirs(self, path: str, prefix: str) -> list:
        infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted((int(i.base_name[len(prefix):]), i.path) for i in infos
                      if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix)
                      and i.base_name[len(prefix):].isdigit())

    def _list_from(self, base: str, hour_ms: int) -> list:
        """Files of the days from ``hour_ms``'s day on (hour directories below it are filtered by the caller)."""
        t = _dt.datetime.fromtimestamp(hour_ms / 1000, _dt.timezone.utc)
        found = []
        for year, year_path in self._subdirs(base, "year="):
            if year < t.year:
                continue
            for month, month_path in self._subdirs(year_path, "month="):
                if (year, month) < (t.year, t.month):
                    continue
                for day, day_path in self._subdirs(month_path, "day="):
                    if (year, month, day) >= (t.year, t.month, t.day):
                        found += self._list(day_path)
        return found

    def _scan(self) -> tuple:
        """``(files, marker hours)`` of both tables, from the cache for settled hours."""
        settled = getattr(self, "_settled_before", None)
        files, markers = [], set()
        for table, base in self.tables.items():
            infos = self._list(base) if settled is None else self._list_from(base, settled)
            for info in infos:
                try:
                    hour = partition_hour_ms(info.path)
                except ValueError:
                    continue
                if settled is not None and hour < settled:
                    continue
                if info.base_name == COMPLETE_MARKER and table == "bronze_telemetry":
                    markers.add(hour)
                    continue
                name = BronzeFileName.parse(info.base_name)
                if name is not None:
                    files.append(BronzeFile(table, info.path, hour, name))
        if settled is not None:
            files = self._settled_files + files
            markers |= self._settled_markers
        if markers:
            # Everything below the earliest open hour is complete and stays as it is.
            boundary = max(markers) + HOUR_MS
            self._settled_before = boundary
            self._settled_files = [f for f in files if f.hour_ms < boundary]
            self._settled_markers = {h for h in markers if h < boundary}
        return files, markers

    def files(self) -> list:
        return self._scan()[0]

    def hour_dir(self, table: str, hour_ms: int) -> str:
        return f"{self.tables[table]}/{hour_partition(hour_ms)}"

    def marker_path(self, hour_ms: int) -> str:
        return f"{self.hour_dir('bronze_telemetry', hour_ms)}/{COMPLETE_MARKER}"

    def complete_hours(self) -> set:
        return self._scan()[1]

    # -- recovery ----------------------------------------------------------
    def recover(self) -> list:
        """Delete what a killed pass left half-written; return the deleted paths.

        Must run while no other ingest writes this lake (the CLI holds a lock).
        """
        deleted = []
        for base in self.tables.values():
            for info in self._list(base):
                if info.base_name.endswith(IN_PROGRESS_SUFFIX):
                    self.fs.delete_file(info.path)
                    deleted.append(info.path)
        groups = defaultdict(list)
        for f in self.files():
            groups[(f.name.partition, f.name.first_offset, f.name.last_offset, f.name.count)].append(f)
        for (partition, first, last, count), members in groups.items():
            if len(members) < count:
                LOG.warning("partition %d offsets %d..%d: %d of %d files, a pass was killed while "
                            "committing: deleting them, the range will be read again",
                            partition, first, last, len(members), count)
                for f in members:
                    self.fs.delete_file(f.path)
                    deleted.append(f.path)
        if deleted:
            self._settled_before = None  # list everything again next time
        return deleted

    # -- state -------------------------------------------------------------
    def state(self, partitions: int) -> BronzeState:
        files = self.files()
        last_group: dict = {}
        hours_with_data = set()
        for f in files:
            hours_with_data.add(f.hour_ms)
            current = last_group.get(f.name.partition)
            if current is None or f.name.last_offset > current[0].name.last_offset:
                last_group[f.name.partition] = [f]
            elif f.name.last_offset == current[0].name.last_offset:
                current.append(f)
        state = BronzeState()
        for p in range(partitions):
            group = last_group.get(p)
            if group is None:
                state.next_offsets[p] = 0
                continue
            state.next_offsets[p] = group[0].name.last_offset + 1
            state.watermarks[p] = max(self._watermark(f.path) for f in group)
        state.complete_hours = self.complete_hours()
        state.open_hours = hours_with_data - state.complete_hours
        if state.complete_hours:
            state.open_from_ms = max(state.complete_hours) + HOUR_MS
        return state

    def _watermark(self, path: str) -> int:
        with self.fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
        return int(meta.get(WATERMARK_KEY, b"-1"))

    # -- completion --------------------------------------------------------
    def close_hours(self, partitions: int, allowed_lateness_ms: int, drained: bool) -> list:
        """Write ``_COMPLETE`` into every hour that is now complete; return their starts.

        An hour is complete when every partition's watermark has passed its
        end plus the allowed lateness, or when the topic was drained.
        """
        state = self.state(partitions)
        if drained:
            closable = sorted(state.open_hours)
        else:
            if len(state.watermarks) < partitions:
                return []  # a partition that never delivered holds every hour open
            low = min(state.watermarks.values())
            closable = sorted(h for h in state.open_hours if h + HOUR_MS + allowed_lateness_ms <= low)
        if not closable:
            return []
        by_hour = defaultdict(list)
        for f in self.files():
            by_hour[f.hour_ms].append(f)
        for hour in closable:
            self._write_marker(hour, by_hour[hour], "drained" if drained else "watermark")
        return closable

    def _write_marker(self, hour_ms: int, files: list, why: str) -> None:
        entries = []
        ranges: dict = {}
        for f in sorted(files, key=lambda f: (f.table, f.name.partition, f.name.first_offset)):
            with self.fs.open_input_file(f.path) as handle:
                meta = pq.ParquetFile(handle).metadata
                stats = meta.row_group(0).column(2).statistics if meta.num_row_groups else None
                rows = meta.num_rows
            lo, hi = (stats.min, stats.max) if stats is not None and stats.has_min_max else (None, None)
            entries.append({"table": f.table, "file": f.path.rsplit("/", 1)[1], "partition": f.name.partition,
                            "rows": rows, "min_offset": lo, "max_offset": hi})
            if lo is not None:
                r = ranges.setdefault(str(f.name.partition), [lo, hi])
                r[0], r[1] = min(r[0], lo), max(r[1], hi)
        marker = {
            "hour": _dt.datetime.fromtimestamp(hour_ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%dT%H"),
            "completed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "completed_by": why,
            "rows": sum(e["rows"] for e in entries),
            "offsets": ranges,
            "files": entries,
        }
        path = self.marker_path(hour_ms)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        write_atomically(self.fs, path, json.dumps(marker, indent=1).encode(), local="://" not in self._root)


def write_atomically(fs: pafs.FileSystem, path: str, data: bytes, local: bool) -> None:
    """Readers see all of ``data`` or nothing: rename locally, one PUT on object stores."""
    if not local:
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    tmp = f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}{IN_PROGRESS_SUFFIX}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)
