"""What the DAGs published, one JSON record per Silver hour and per Gold day.

    {LAKE_ROOT}/_quality/runs/silver/2026-03-01/2026-03-01T08.json
    {LAKE_ROOT}/_quality/runs/gold/2026-03-01.json

A record is written after its job published, and rewritten when the hour
or day runs again (the latest run wins). Besides telling an operator what
a run did without Airflow's database, the Silver records are how the daily
DAG knows that an hour was published (``silver_hours_recorded``).
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Optional

import pyarrow.fs as pafs

from lake_core.storage import filesystem, fs_path, is_local, write_atomically
from lake_schemas import LakePaths
from lake_schemas.paths import join

__all__ = ["record_silver_hour", "silver_hours_recorded", "record_gold_day", "read_record", "runs_dir"]


def runs_dir(lake_root: str) -> str:
    return join(LakePaths(lake_root).quality, "runs")


def _silver_path(lake_root: str, hour: str) -> str:
    return join(runs_dir(lake_root), "silver", hour[:10], f"{hour}.json")


def _gold_path(lake_root: str, day: str) -> str:
    return join(runs_dir(lake_root), "gold", f"{day}.json")


def _write(lake_root: str, path: str, body: dict) -> str:
    fs, _ = filesystem(lake_root)
    inner = fs_path(lake_root, path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    write_atomically(fs, inner, json.dumps(body, indent=1, sort_keys=True, default=str).encode(), is_local(lake_root))
    return path


def _record(layer: str, key: str, published: dict, dag_run: Optional[str]) -> dict:
    return {
        "layer": layer,
        "key": key,
        "dag_run": dag_run,
        "published": published,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def record_silver_hour(lake_root: str, hour: str, published: dict, dag_run: Optional[str] = None) -> str:
    """Record that Bronze hour ``hour`` (``2026-03-01T08``) was published to Silver; return the record's path."""
    return _write(lake_root, _silver_path(lake_root, hour), _record("silver", hour, published, dag_run))


def record_gold_day(lake_root: str, day: str, published: dict, dag_run: Optional[str] = None) -> str:
    return _write(lake_root, _gold_path(lake_root, day), _record("gold", day, published, dag_run))


def silver_hours_recorded(lake_root: str, day: _dt.date) -> set:
    """The hours of ``day`` (``2026-03-01T08``...) whose Silver publication is recorded."""
    fs, _ = filesystem(lake_root)
    directory = fs_path(lake_root, join(runs_dir(lake_root), "silver", day.isoformat()))
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    return {
        i.base_name[: -len(".json")] for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".json")
    }


def read_record(lake_root: str, layer: str, key: str) -> Optional[dict]:
    """The record of a Silver hour or a Gold day, or None."""
    fs, _ = filesystem(lake_root)
    path = fs_path(lake_root, _silver_path(lake_root, key) if layer == "silver" else _gold_path(lake_root, key))
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
