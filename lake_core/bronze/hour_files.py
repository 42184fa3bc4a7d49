"""Finding and reading the files of one Bronze hour, with clear errors.

A missing hour, a file the ``_COMPLETE`` marker names but that is gone, or
a file that is not readable Parquet with Bronze's columns each raise a
``LakeDataError`` that names the hour or the file, before anything is written.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lake_core.bronze.layout import marker_files, read_marker
from lake_core.errors import LakeDataError
from lake_core.storage import filesystem, fs_path
from lake_schemas import BRONZE_SCHEMA, BronzeFileName, LakePaths
from lake_schemas.paths import COMPLETE_MARKER, format_hour

__all__ = ["BronzeHour", "list_bronze_hour", "read_bronze_file", "check_bronze_file"]

LOG = logging.getLogger(__name__)


class BronzeHour(NamedTuple):
    hour: str  # "2026-03-01T08"
    directory: str  # inside the lake's filesystem
    files: tuple  # file names, sorted
    complete: bool  # the ingest wrote _COMPLETE: the hour will not change


def list_bronze_hour(lake_root: str, hour_ms: int) -> BronzeHour:
    """The Bronze files of the hour starting at ``hour_ms``; ``LakeDataError`` if there is no such hour."""
    fs, _ = filesystem(lake_root)
    hour = format_hour(hour_ms)
    directory = fs_path(lake_root, LakePaths(lake_root).bronze_hour(hour_ms))
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    names = sorted(
        i.base_name for i in infos if i.type == pafs.FileType.File and BronzeFileName.parse(i.base_name) is not None
    )
    complete = any(i.base_name == COMPLETE_MARKER for i in infos)
    if not names and not complete:
        raise LakeDataError(
            f"no Bronze data for hour {hour}: {directory} {'is empty' if infos else 'does not exist'}"
            f"{_nearby_hours(fs, lake_root)}"
        )
    if complete:
        missing = marker_files(read_marker(fs, f"{directory}/{COMPLETE_MARKER}") or {}) - set(names)
        if missing:
            raise LakeDataError(
                f"Bronze hour {hour} is incomplete on disk: its {COMPLETE_MARKER} names "
                f"{len(missing)} file(s) that are missing, e.g. {sorted(missing)[0]}"
            )
    else:
        LOG.warning(
            "Bronze hour %s is still open (no %s): processing the %d file(s) present; run it again once it is complete",
            hour,
            COMPLETE_MARKER,
            len(names),
        )
    return BronzeHour(hour, directory, tuple(names), complete)


def _nearby_hours(fs: pafs.FileSystem, lake_root: str) -> str:
    base = fs_path(lake_root, LakePaths(lake_root).bronze)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError:
        return ""
    hours = sorted(
        {
            i.path[len(base) :].strip("/").rsplit("/", 1)[0]
            for i in infos
            if i.type == pafs.FileType.File and "hour=" in i.path
        }
    )
    if not hours:
        return f" (Bronze at {base} holds no hour yet)"
    shown = [h.replace("year=", "").replace("/month=", "-").replace("/day=", "-").replace("/hour=", "T") for h in hours]
    more = f" ... {shown[-1]}" if len(shown) > 3 else ""
    return f" (Bronze holds {len(shown)} hour(s): {', '.join(shown[:3])}{more})"


def _open(lake_root: str, path: str) -> Any:
    fs, _ = filesystem(lake_root)
    return fs.open_input_file(path)


def check_bronze_file(lake_root: str, path: str) -> int:
    """Cheap check (footer and schema only) that ``path`` is a Bronze file; its number of rows."""
    try:
        with _open(lake_root, path) as f:
            metadata = pq.read_metadata(f)
            schema = metadata.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise LakeDataError(f"Bronze file {path} is corrupt or truncated: {_first_line(exc)}") from None
    missing = [n for n in BRONZE_SCHEMA.names if n not in schema.names]
    if missing:
        raise LakeDataError(f"Bronze file {path} lacks the column(s) {', '.join(missing)}")
    return metadata.num_rows


def read_bronze_file(lake_root: str, path: str) -> pa.Table:
    """The rows of one Bronze file as ``BRONZE_SCHEMA``."""
    check_bronze_file(lake_root, path)
    try:
        with _open(lake_root, path) as f:
            table = pq.read_table(f, columns=BRONZE_SCHEMA.names)
        return table.cast(BRONZE_SCHEMA)
    except (OSError, pa.ArrowException) as exc:
        raise LakeDataError(f"Bronze file {path} is corrupt or truncated: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
