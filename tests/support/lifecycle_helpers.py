"""What ``test_maintenance`` and ``test_forget`` share: building lakes and looking at them as files."""

from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from beam_pipelines.gold.options import GoldOptions
from beam_pipelines.gold.pipeline import run_gold
from beam_pipelines.ingest.bronze_state import WATERMARK_KEY
from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake_core.storage import delta_dataset
from lake_schemas import BRONZE_SCHEMA, REJECTS_SCHEMA, BronzeFileName, LakePaths
from lake_schemas.paths import hour_partition
from support import lake_scenario as sc

DELTA_TABLES = [
    "silver_telemetry",
    "silver_quarantine",
    "gold_vehicle_hourly",
    "gold_zone_hourly",
    "gold_vehicle_state",
    "dims_vehicles",
]
DAYS = ("2026-03-01", "2026-02-23")  # the scenario's Silver days (V2's k4 is on 2026-02-23)


def run_layers(root: str) -> None:
    """Silver for the scenario's two hours, then Gold for both of its days (real Beam, local runner)."""
    for hour in (sc.H08, sc.H09):
        run_silver(SilverOptions(root, hour, gate=False))
    for day in DAYS:
        run_gold(GoldOptions(root, day, gate=False))


def build_scenario_lake(root: str) -> None:
    """``lake_scenario``'s Bronze and registry, then real Silver and Gold runs over it."""
    sc.build(root)
    run_layers(root)


def write_group(
    root: str, partition: int, hour_ms: int, bronze_rows: list, reject_rows: list, watermark_ms: int
) -> list:
    """One ingest pass of one Kafka partition into one hour: a Bronze file and a rejects file, one group.

    Rows are dicts of the table's columns; offsets are the rows' ``kafka_offset``.
    """
    offsets = [r["kafka_offset"] for r in bronze_rows + reject_rows]
    parts = [
        (t, rows, schema)
        for t, rows, schema in (
            ("bronze_telemetry", bronze_rows, BRONZE_SCHEMA),
            ("bronze_rejects", reject_rows, REJECTS_SCHEMA),
        )
        if rows
    ]
    written = []
    for index, (table, rows, schema) in enumerate(parts, start=1):
        name = BronzeFileName(partition, min(offsets), max(offsets), index, len(parts))
        directory = f"{LakePaths(root).table(table)}/{hour_partition(hour_ms)}"
        os.makedirs(directory, exist_ok=True)
        data = pa.Table.from_pylist(rows, schema=schema)
        data = data.replace_schema_metadata({WATERMARK_KEY: str(watermark_ms).encode()})
        pq.write_table(data, f"{directory}/{name}", compression="zstd")
        written.append(f"{directory}/{name}")
    return written


def copy_lake(source: str, target: str) -> str:
    shutil.copytree(source, target)
    return target


def tree(root: str) -> dict:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root``: a lake's state as files."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            st = os.stat(path)
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


def versions(root: str) -> dict:
    paths = LakePaths(root)
    return {t: DeltaTable(paths.table(t)).version() for t in DELTA_TABLES if DeltaTable.is_deltatable(paths.table(t))}


def rows(root: str, table: str) -> list:
    """Every row of a Delta table (current version), sorted, as dicts."""
    data = delta_dataset(LakePaths(root).table(table)).to_table().to_pylist()
    return sorted(data, key=lambda r: tuple(str(r[c]) for c in sorted(r)))


def parquet_files(directory: str) -> list:
    """Every data file on disk under ``directory``, referenced by the current version or not."""
    return sorted(
        os.path.join(d, n)
        for d, _, names in os.walk(directory)
        for n in names
        if n.endswith(".parquet") and "_delta_log" not in d
    )
