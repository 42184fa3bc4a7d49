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


def delta_dataset(table_uri: str, **kwargs):
    """``DeltaTable(table_uri).to_pyarrow_dataset(**kwargs)`` read through a pyarrow filesystem.

    deltalake's own filesystem handler (used when no ``filesystem`` is given)
    leaves runtime threads that abort the interpreter at exit ("terminate
    called without an active exception", exit 134, deltalake 1.6.6); pyarrow's
    filesystem rooted at the table does not. ``kwargs`` go to
    ``to_pyarrow_dataset``; a ``DeltaTable`` may be passed as ``table=``.
    """
    from deltalake import DeltaTable

    table = kwargs.pop("table", None) or DeltaTable(table_uri)
    fs, root = filesystem(table_uri)
    return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(root, fs), **kwargs)
