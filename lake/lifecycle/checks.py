"""Argument checks shared by ``lake maintain`` and ``lake forget``: refuse before touching anything."""

from __future__ import annotations

import datetime as _dt
from typing import Optional

from lake_core.errors import ConfigError
from lake_core.storage import filesystem, fs_path, is_local
from lake_schemas import TABLES, LakePaths
from lake_schemas.messages import VEHICLE_ID_PATTERN, is_vehicle_id

__all__ = ["require_lake", "check_vehicle_id", "utc_now", "parse_now"]


def require_lake(lake_root: str) -> None:
    """``ConfigError`` unless ``lake_root`` exists and holds at least one of the lake's tables.

    A mistyped ``--lake-root`` must not look like an empty lake that needed no work.
    """
    fs, _ = filesystem(lake_root)
    where = "--lake-root or env LAKE_ROOT"
    if is_local(lake_root) and fs.get_file_info(fs_path(lake_root, lake_root)).type.name != "Directory":
        raise ConfigError(f"lake root {lake_root} does not exist ({where})")
    paths = LakePaths(lake_root)
    if not any(fs.get_file_info(fs_path(lake_root, paths.table(t))).type.name == "Directory" for t in TABLES):
        raise ConfigError(
            f"{lake_root} holds none of the lake's tables ({', '.join(TABLES.values())}): not a lake root? ({where})"
        )


def check_vehicle_id(vehicle_id: str) -> str:
    """The id, if it is one the contract allows (which also keeps it safe inside SQL predicates)."""
    if not is_vehicle_id(vehicle_id):
        raise ConfigError(f"not a vehicle id: {vehicle_id!r} (expected {VEHICLE_ID_PATTERN})")
    return vehicle_id


def utc_now(now: Optional[_dt.datetime] = None) -> _dt.datetime:
    """``now`` in UTC (the current time when None); a naive datetime is refused as ambiguous."""
    if now is None:
        return _dt.datetime.now(_dt.timezone.utc)
    if not isinstance(now, _dt.datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ConfigError(f"now must be a timezone-aware datetime, got {now!r}")
    return now.astimezone(_dt.timezone.utc)


def parse_now(text: str) -> _dt.datetime:
    """``--now``: ISO 8601 (``2026-03-01T08:00:00Z``, an offset, or a date); without offset, UTC."""
    try:
        value = _dt.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ConfigError(f"--now {text!r} is not an ISO 8601 time (e.g. 2026-03-01T08:00:00Z)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
