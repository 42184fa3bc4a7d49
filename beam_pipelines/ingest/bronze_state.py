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

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lake_core.bronze.layout import bronze_file, read_json, write_marker
from lake_core.storage import IN_PROGRESS_SUFFIX, filesystem, fs_path, is_local, write_atomically
from lake_schemas import LakePaths
from lake_schemas.paths import COMPLETE_MARKER, HOUR_MS, hour_partition, join, partition_hour_ms

LOG = logging.getLogger(__name__)

WATERMARK_KEY = b"lake.watermark_ms"
GENERATION_MARKER = "_GENERATION"


@dataclass
class BronzeState:
    """What a pass needs to know before it starts."""

    generation: int = 0  # the topic's offsets started again this many times (``lake ingest --new-generation``)
    next_offsets: dict = field(default_factory=dict)  # partition -> first offset to read
    watermarks: dict = field(default_factory=dict)  # partition -> max record timestamp (ms) seen
    open_from_ms: Optional[int] = None  # start of the earliest hour still open
    complete_hours: set = field(default_factory=set)
    open_hours: set = field(default_factory=set)
    last_files: dict = field(default_factory=dict)  # partition -> paths of its latest group (this generation)


class BronzeStore:
    """Bronze and rejects of one lake, as files."""

    # The listing cache (see ``_scan``), set after the first listing that finds a complete hour.
    _settled_before: Optional[int]
    _settled_files: list
    _settled_markers: set

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
        return sorted(
            (int(i.base_name[len(prefix) :]), i.path)
            for i in infos
            if i.type == pafs.FileType.Directory
            and i.base_name.startswith(prefix)
            and i.base_name[len(prefix) :].isdigit()
        )

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
                found = bronze_file(table, info)
                if found is not None:
                    files.append(found)
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

        Must run while no other ingest writes this lake: the ingest holds the lake's lease
        (``lake_core.lease``) before it calls this. A group is half-written when files are missing, or
        when one of them is empty or unreadable (a power cut between a write and its flush to disk):
        its range is read again.
        """
        deleted = []
        for base in self.tables.values():
            for info in self._list(base):
                if info.base_name.endswith(IN_PROGRESS_SUFFIX):
                    self.fs.delete_file(info.path)
                    deleted.append(info.path)
        groups = defaultdict(list)
        for f in self.files():
            groups[f.group].append(f)
        latest: dict = {}  # (generation, partition) -> its latest group: the one resuming relies on
        for key in groups:
            stream = key[:2]
            if stream not in latest or key[3] > latest[stream][3]:
                latest[stream] = key
        for key, members in groups.items():
            generation, partition, first, last, count = key
            why = None
            if len(members) < count:
                why = f"{len(members)} of {count} files"
            elif any(f.size == 0 for f in members):
                why = "an empty file"
            elif key == latest[key[:2]] and not all(self._readable(f.path) for f in members):
                why = "an unreadable file"
            if why is None:
                continue
            LOG.warning(
                "generation %d partition %d offsets %d..%d: %s, a pass was cut off while committing: "
                "deleting its files, the range will be read again",
                generation,
                partition,
                first,
                last,
                why,
            )
            for f in members:
                self.fs.delete_file(f.path)
                deleted.append(f.path)
        if deleted:
            self._settled_before = None  # list everything again next time
        return deleted

    # -- state -------------------------------------------------------------
    def state(self, partitions: int) -> BronzeState:
        files = self.files()
        generation = self.generation()
        last_group: dict = {}
        hours_with_data = set()
        for f in files:
            hours_with_data.add(f.hour_ms)
            if f.name.generation != generation:
                continue  # an earlier generation's offsets say nothing about where this one resumes
            current = last_group.get(f.name.partition)
            if current is None or f.name.last_offset > current[0].name.last_offset:
                last_group[f.name.partition] = [f]
            elif f.name.last_offset == current[0].name.last_offset:
                current.append(f)
        state = BronzeState(generation=generation)
        skipped: dict[int, int] = {}  # partition -> first offset after the gaps recorded in this generation
        for gap in self.gaps():
            if gap.get("generation", 0) == generation:
                p = int(gap["partition"])
                skipped[p] = max(skipped.get(p, 0), int(gap["last_offset"]) + 1)
        for p in range(partitions):
            group = last_group.get(p)
            if group is None:
                state.next_offsets[p] = skipped.get(p, 0)
                continue
            state.next_offsets[p] = max(group[0].name.last_offset + 1, skipped.get(p, 0))
            state.last_files[p] = [f.path for f in group]
            state.watermarks[p] = max(self._watermark(f.path) for f in group)
        state.complete_hours = self.complete_hours()
        state.open_hours = hours_with_data - state.complete_hours
        if state.complete_hours:
            state.open_from_ms = max(state.complete_hours) + HOUR_MS
        return state

    def _readable(self, path: str) -> bool:
        try:
            with self.fs.open_input_file(path) as f:
                pq.read_metadata(f)
            return True
        except (OSError, pa.ArrowException):
            return False

    def _watermark(self, path: str) -> int:
        with self.fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
        return int(meta.get(WATERMARK_KEY, b"-1"))

    # -- generations and gaps ---------------------------------------------
    # ``_GENERATION`` in Bronze's folder names the current generation (absent: 0); gaps (offsets the
    # broker deleted before they were read) are recorded where the ledger reads them, and skipped.
    @property
    def _generation_path(self) -> str:
        return f"{self.tables['bronze_telemetry']}/{GENERATION_MARKER}"

    @property
    def _gaps_dir(self) -> str:
        return fs_path(self._root, join(self._root, "_ledger", "gaps"))

    def generation(self) -> int:
        marker = read_json(self.fs, self._generation_path)
        return int(marker["generation"]) if marker else 0

    def start_generation(self, partitions: int, why: str) -> int:
        """Start the next generation: from now on the ingest resumes from the topic's start, and its
        files carry the new generation in their names. Returns it."""
        before = self.state(partitions)
        generation = before.generation + 1
        record = {
            "generation": generation,
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "why": why,
            "previous_resume_offsets": {str(p): o for p, o in sorted(before.next_offsets.items())},
        }
        self.fs.create_dir(self.tables["bronze_telemetry"], recursive=True)
        write_atomically(self.fs, self._generation_path, json.dumps(record, indent=1).encode(), is_local(self._root))
        return generation

    def gaps(self) -> list:
        infos = self.fs.get_file_info(pafs.FileSelector(self._gaps_dir, allow_not_found=True))
        found = [read_json(self.fs, i.path) for i in infos if i.base_name.endswith(".json")]
        return [g for g in found if g]

    def record_gap(self, generation: int, topic: str, partition: int, first: int, last: int, hour_ms: int) -> str:
        """Record offsets ``first..last`` of ``partition`` as deleted before the ingest read them; idempotent."""
        path = f"{self._gaps_dir}/g{generation:04d}-p{partition:04d}-{first:020d}-{last:020d}.json"
        record = {
            "generation": generation,
            "topic": topic,
            "partition": partition,
            "first_offset": first,
            "last_offset": last,
            "records": last - first + 1,
            "hour": _dt.datetime.fromtimestamp(hour_ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%dT%H"),
            "detected_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.fs.create_dir(self._gaps_dir, recursive=True)
        write_atomically(self.fs, path, json.dumps(record, indent=1).encode(), is_local(self._root))
        return path

    # -- completion --------------------------------------------------------
    def close_hours(
        self, partitions: int, allowed_lateness_ms: int, drained: bool, now_ms: Optional[int] = None
    ) -> list:
        """Write ``_COMPLETE`` into every hour that is now complete; return their starts.

        An hour is complete when every partition's watermark has passed its
        end plus the allowed lateness, or when the topic was drained and the
        hour is over on the ingest's clock: its end plus the allowed lateness
        is before ``now_ms`` (``None``: every hour held, for replays of past
        data, ``--close-open-hours``). A drained run at 10:20 leaves hour 10
        open, so runs every few minutes do not push records into later hours.
        """
        state = self.state(partitions)
        if drained:
            closable = sorted(
                h for h in state.open_hours if now_ms is None or h + HOUR_MS + allowed_lateness_ms <= now_ms
            )
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
            entries.append(
                {
                    "table": f.table,
                    "file": f.path.rsplit("/", 1)[1],
                    "partition": f.name.partition,
                    "generation": f.name.generation,
                    "rows": rows,
                    "min_offset": lo,
                    "max_offset": hi,
                }
            )
            if lo is not None:  # per partition; a later generation's ranges apart ("g0001/3"): its offsets restart
                key = f"g{f.name.generation:04d}/{f.name.partition}" if f.name.generation else str(f.name.partition)
                r = ranges.setdefault(key, [lo, hi])
                r[0], r[1] = min(r[0], lo), max(r[1], hi)
        marker = {
            "hour": _dt.datetime.fromtimestamp(hour_ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%dT%H"),
            "completed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "completed_by": why,
            "rows": sum(e["rows"] for e in entries),
            "offsets": ranges,
            "files": entries,
        }
        write_marker(self.fs, self.marker_path(hour_ms), marker, local=is_local(self._root))
