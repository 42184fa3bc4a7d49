"""Is a Bronze hour ready for Silver, empty for good, or still open?

The ingest writes ``_COMPLETE`` into an hour once it is closed (contract
section 2), and closes hours in order; but it only writes Bronze hours that
received data. So an hour with no data never gets a marker, and waiting for
its marker would wait forever. Instead:

- ``READY``: the hour holds Bronze files and is complete (or the ingest has
  already closed a later hour, so nothing more will land in it);
- ``EMPTY``: the hour holds no Bronze rows (no directory, or a marker over
  rejects only) and the hour itself or a later one is complete: the ingest
  has moved past it, there is nothing to process;
- ``WAITING``: neither yet.

Finding "a later complete hour" walks the ``year=/month=/day=/hour=`` tree
forward from the hour, pruning everything before it, so it costs a few
listings, not a listing of all of Bronze (that matters on object stores).
"""

from __future__ import annotations

import enum

import pyarrow.fs as pafs

from lake_core.storage import filesystem, fs_path
from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.paths import COMPLETE_MARKER, hour_partition

__all__ = ["HourState", "bronze_hour_state", "later_hour_complete"]


class HourState(str, enum.Enum):
    READY = "ready"
    EMPTY = "empty"
    WAITING = "waiting"


def _children(fs: pafs.FileSystem, path: str) -> list:
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def later_hour_complete(lake_root: str, hour_ms: int) -> bool:
    """Whether the ingest has closed any Bronze hour after the one starting at ``hour_ms``."""
    fs, _ = filesystem(lake_root)
    target = hour_partition(hour_ms).split("/")  # year=YYYY, month=MM, day=DD, hour=HH: zero-padded, so they sort

    def walk(path: str, level: int, on_target_path: bool) -> bool:
        dirs = sorted((i for i in _children(fs, path) if i.type == pafs.FileType.Directory), key=lambda i: i.base_name)
        for info in dirs:
            if on_target_path and info.base_name < target[level]:
                continue
            still_on_path = on_target_path and info.base_name == target[level]
            if level == len(target) - 1:
                if not still_on_path and fs.get_file_info(f"{info.path}/{COMPLETE_MARKER}").type == pafs.FileType.File:
                    return True
            elif walk(info.path, level + 1, still_on_path):
                return True
        return False

    return walk(fs_path(lake_root, LakePaths(lake_root).bronze), 0, True)


def bronze_hour_state(lake_root: str, hour_ms: int) -> HourState:
    fs, _ = filesystem(lake_root)
    directory = fs_path(lake_root, LakePaths(lake_root).bronze_hour(hour_ms))
    infos = [i for i in _children(fs, directory) if i.type == pafs.FileType.File]
    has_files = any(BronzeFileName.parse(i.base_name) is not None for i in infos)
    complete = any(i.base_name == COMPLETE_MARKER for i in infos)
    if not complete and not later_hour_complete(lake_root, hour_ms):
        return HourState.WAITING
    return HourState.READY if has_files else HourState.EMPTY
