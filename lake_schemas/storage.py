"""The filesystem behind a lake root: local path, ``s3://`` or ``gs://``."""
from __future__ import annotations

from functools import lru_cache

import pyarrow.fs as pafs


@lru_cache(maxsize=16)
def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path of root inside it)``; a plain path is local."""
    if "://" not in root:
        return pafs.LocalFileSystem(), root
    return pafs.FileSystem.from_uri(root)


def is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


def fs_path(root: str, uri_or_path: str) -> str:
    """The path inside ``filesystem(root)`` of a location built from ``root``."""
    if "://" not in root:
        return uri_or_path
    return uri_or_path.split("://", 1)[1]
