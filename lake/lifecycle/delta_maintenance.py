"""Upkeep of one Delta table: retention delete, compaction, vacuum, log checkpoint.

Every commit goes through ``with_commit_retries``: a Silver or Gold job
committing meanwhile makes ours lose the race (``CommitFailedError``), and
the operation is redone from a fresh snapshot. An operation that has nothing
to do commits nothing (deltalake 1.6.6: a delete matching no row, a compaction
of an already compact table and a vacuum finding no file write no version),
so running maintenance twice changes nothing the second time.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections import defaultdict
from contextlib import contextmanager
from typing import Optional
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs

from lake.lifecycle.limits import MIN_VACUUM_HOURS
from lake_core.delta import with_commit_retries
from lake_core.errors import LakeDataError
from lake_core.storage import filesystem, fs_path
from lake_schemas.paths import join

__all__ = [
    "PARTITION",
    "delta_errors",
    "open_delta",
    "data_files",
    "partitions_before",
    "expire_before",
    "compact",
    "estimate_compacted",
    "vacuum",
    "checkpoint_log",
    "MIN_VACUUM_HOURS",
    "DEFAULT_TARGET_FILE_BYTES",
]

PARTITION = "event_date"
#: What ``optimize.compact`` aims for when the table sets no ``delta.targetFileSize``.
DEFAULT_TARGET_FILE_BYTES = 100 * 1024 * 1024


def open_delta(path: str):
    """The Delta table at ``path``, or None when there is none."""
    from deltalake import DeltaTable

    return DeltaTable(path) if DeltaTable.is_deltatable(path) else None


@contextmanager
def delta_errors(what: str):
    """Turn deltalake's errors (and its storage's: ``OSError``) into one-line ``LakeDataError``s naming the table."""
    from deltalake.exceptions import DeltaError

    try:
        yield
    except (DeltaError, OSError) as exc:
        raise LakeDataError(f"{what}: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    """An error's first line and, when it has a chain of causes (object store errors do), its last."""
    lines = [re.sub(r"\x1b\[[0-9;]*m|↳", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line] or [type(exc).__name__]
    return lines[0] + (f" ({lines[-1]})" if len(lines) > 1 else "")


def _add_actions(table) -> pa.Table:
    return pa.table(table.get_add_actions(flatten=True))


def data_files(path: str) -> int:
    table = open_delta(path)
    return 0 if table is None else len(table.file_uris())


def partitions_before(table, before: _dt.date) -> tuple[int, int]:
    """``(partitions, rows)`` of ``event_date`` partitions older than ``before`` (from the log, no data read)."""
    actions = _add_actions(table).to_pylist()
    column = f"partition.{PARTITION}"
    days, rows = set(), 0
    for action in actions:
        day = action.get(column)
        if day is not None and day < before:
            days.add(day)
            rows += int(action.get("num_records") or 0)
    return len(days), rows


def expire_before(path: str, before: _dt.date, dry_run: bool) -> tuple[int, int]:
    """Delete every ``event_date`` partition older than ``before`` (whole files, no rewrite).

    Returns ``(partitions, rows)`` deleted, or that would be with ``dry_run``.
    """
    from deltalake import DeltaTable

    table = DeltaTable(path)
    if PARTITION not in table.metadata().partition_columns:
        raise LakeDataError(
            f"{path} is not partitioned by {PARTITION}: retention by date would rewrite every "
            f"file; refusing (partitioned by {table.metadata().partition_columns or 'nothing'})"
        )
    partitions, rows = partitions_before(table, before)
    if dry_run or partitions == 0:
        return partitions, rows
    predicate = f"{PARTITION} < DATE '{before.isoformat()}'"
    with delta_errors(f"retention delete in {path}"):
        metrics = with_commit_retries(lambda: DeltaTable(path).delete(predicate), f"retention delete in {path}")
    return partitions, int(metrics.get("num_deleted_rows", rows))


def estimate_compacted(table, expired_before: Optional[_dt.date] = None) -> tuple[int, int]:
    """``(files, files after compact)`` as deltalake's planner would make them (an estimate, for dry runs).

    Per partition, files under the target size are binned together when there
    are at least two of them. Partitions older than ``expired_before`` are
    left out: retention deletes them first.
    """
    target = int(table.metadata().configuration.get("delta.targetFileSize") or DEFAULT_TARGET_FILE_BYTES)
    small = defaultdict(list)
    total = 0
    partition_columns = [f"partition.{c}" for c in table.metadata().partition_columns]
    for action in _add_actions(table).to_pylist():
        day = action.get(f"partition.{PARTITION}")
        if expired_before is not None and day is not None and day < expired_before:
            continue
        total += 1
        if action["size_bytes"] < target:
            small[tuple(action.get(c) for c in partition_columns)].append(action["size_bytes"])
    saved = sum(len(sizes) - math.ceil(sum(sizes) / target) for sizes in small.values() if len(sizes) > 1)
    return total, total - saved


def compact(path: str) -> tuple[int, int]:
    """``optimize.compact()`` with commit retries; returns ``(files before, files after)``."""
    from deltalake import DeltaTable

    before = len(DeltaTable(path).file_uris())
    with delta_errors(f"compaction of {path}"):
        with_commit_retries(lambda: DeltaTable(path).optimize.compact(), f"compaction of {path}")
    return before, len(DeltaTable(path).file_uris())


def vacuum(path: str, hours: float, dry_run: bool, full: bool = True) -> list:
    """Delete (or list, with ``dry_run``) files no version newer than ``hours`` ago needs; return them.

    ``full=True`` also finds files no commit references at all (left by a
    commit that failed), older than ``hours`` by modification time; without
    it deltalake only looks at files removed by a commit. Under
    ``MIN_VACUUM_HOURS`` deltalake's own guard is switched off: the caller
    decided (``--force``).

    deltalake 1.6.6 lists a removed file again on every vacuum until its
    remove action leaves the log, gone or not, and commits a VACUUM each
    time; so only files still there count, and with none, nothing runs.
    """
    from deltalake import DeltaTable

    enforce = hours >= MIN_VACUUM_HOURS

    def run(dry: bool) -> list:
        return DeltaTable(path).vacuum(
            retention_hours=hours, dry_run=dry, enforce_retention_duration=enforce, full=full
        )

    with delta_errors(f"vacuum of {path}"):
        present = _existing(path, run(True))
        if present and not dry_run:
            with_commit_retries(lambda: run(False), f"vacuum of {path}")
    return present


def _existing(table_path: str, relative: list) -> list:
    if not relative:
        return []
    fs, _ = filesystem(table_path)
    base = fs_path(table_path, table_path).rstrip("/")
    infos = fs.get_file_info([f"{base}/{unquote(r)}" for r in relative])
    return [r for r, info in zip(relative, infos) if info.type == pafs.FileType.File]


def _last_checkpoint_version(path: str) -> Optional[int]:
    fs, _ = filesystem(path)
    location = fs_path(path, join(path, "_delta_log", "_last_checkpoint"))
    try:
        with fs.open_input_stream(location) as f:
            return int(json.loads(f.read())["version"])
    except (FileNotFoundError, OSError, ValueError, KeyError):
        return None


def checkpoint_log(path: str) -> bool:
    """Checkpoint the current version unless it is, then drop log files past ``delta.logRetentionDuration``.

    Expired log entries go only once a checkpoint follows them; they hold the
    statistics (min/max values) of files long vacuumed. Returns whether a
    checkpoint was written.
    """
    from deltalake import DeltaTable

    table = DeltaTable(path)
    if _last_checkpoint_version(path) == table.version():
        return False
    with delta_errors(f"log checkpoint of {path}"):
        table.create_checkpoint()
        table.cleanup_metadata()
    return True
