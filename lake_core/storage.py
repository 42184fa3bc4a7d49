"""The filesystem behind a lake root (local path, ``s3://`` or ``gs://``) and whole-file writes."""

from __future__ import annotations

import contextlib
import os
import uuid
from functools import lru_cache
from typing import Any, Callable, Optional, Sequence

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


def delta_dataset(table_uri: str, **kwargs: Any) -> Any:
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


#: Temporary files end so; whatever a killed writer left with it is garbage a recovery may delete.
IN_PROGRESS_SUFFIX = ".inprogress"


def write_whole(fs: pafs.FileSystem, path: str, write: Callable[[Any], None], local: bool) -> None:
    """Readers see the file at ``path`` whole or not at all; ``write(stream)`` fills it.

    On object stores one PUT is atomic. Locally the bytes go to a temporary
    name unique to this writer (two writers never share one), are fsynced,
    then renamed, and the folder is fsynced: after a power cut the file is
    either absent or whole, never a zero-length file under its final name.
    """
    if not local:
        with fs.open_output_stream(path) as out:
            write(out)
        return
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:12]}{IN_PROGRESS_SUFFIX}"
    try:
        with fs.open_output_stream(tmp) as out:  # Arrow's own stream: the GIL is released while it writes
            write(out)
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync(folder, os.O_RDONLY | os.O_DIRECTORY)


def write_atomically(fs: pafs.FileSystem, path: str, data: bytes, local: bool) -> None:
    """``write_whole`` of ``data``."""
    write_whole(fs, path, lambda out: out.write(data), local)


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_arrow_file(lake_root: str, path: str, columns: Optional[Sequence[str]] = None) -> Any:
    """The Arrow IPC file ``path`` on ``lake_root``'s filesystem as a table; only ``columns`` (in that
    order; the others are not even decompressed) when given."""
    import pyarrow.ipc as ipc

    fs, _ = filesystem(lake_root)
    with fs.open_input_file(path) as f:
        if columns is None:
            return ipc.open_file(f).read_all()
        names = ipc.open_file(f).schema.names
        fields = [names.index(c) for c in columns]
        return ipc.open_file(f, options=ipc.IpcReadOptions(included_fields=fields)).read_all().select(list(columns))
