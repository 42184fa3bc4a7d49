"""Append-only audit logs: ``{LAKE_ROOT}/_audit/{name}.jsonl``, one JSON object per line.

Local lakes append with ``O_APPEND`` (one ``write`` per record, so
concurrent writers never interleave a line). Object stores cannot append:
there the log is read and written back whole, which is fine for a log
written by an operator's command a few times a day, not for concurrent
writers.
"""

from __future__ import annotations

import json
import os

from lake_core.storage import filesystem, fs_path, is_local
from lake_schemas.paths import join

__all__ = ["AUDIT_DIR", "audit_log_path", "append_record", "read_records"]

AUDIT_DIR = "_audit"


def audit_log_path(lake_root: str, name: str) -> str:
    return join(lake_root, AUDIT_DIR, f"{name}.jsonl")


def append_record(lake_root: str, name: str, record: dict) -> str:
    """Append ``record`` to the log ``name``; return the log's location."""
    line = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode()
    location = audit_log_path(lake_root, name)
    if is_local(lake_root):
        path = fs_path(lake_root, location).removeprefix("file://")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return location
    fs, _ = filesystem(lake_root)
    path = fs_path(lake_root, location)
    old = b""
    if fs.get_file_info(path).type.name == "File":
        with fs.open_input_stream(path) as f:
            old = f.read()
    with fs.open_output_stream(path) as out:
        out.write(old + line)
    return location


def read_records(lake_root: str, name: str) -> list:
    """Every record of the log ``name`` (an empty list when there is none)."""
    fs, _ = filesystem(lake_root)
    path = fs_path(lake_root, audit_log_path(lake_root, name))
    if fs.get_file_info(path).type.name != "File":
        return []
    with fs.open_input_stream(path) as f:
        return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
