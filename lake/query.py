"""SQL over the lake's tables (contract section 6), for the CLI and notebooks.

    from lake.query import query
    query("SELECT vehicle_id, count(*) FROM bronze_telemetry GROUP BY 1").to_pandas()

DuckDB scans Arrow datasets: Bronze's hive-partitioned Parquet directly, and
the Delta tables through ``deltalake`` (DuckDB's delta extension cannot be
downloaded offline, and the Arrow route needs no extension at all).
"""
from __future__ import annotations

import re
from typing import Optional

import pyarrow as pa

from lake_schemas import TABLES, LakePaths
from lake_schemas.paths import PARQUET_TABLES
from lake_schemas.storage import filesystem, fs_path

from .errors import LakeError

__all__ = ["query", "table_dataset", "available_tables"]


def table_dataset(lake_root: str, name: str):
    """The Arrow dataset of table ``name``, or None when the table does not exist yet."""
    import pyarrow.dataset as ds

    location = LakePaths(lake_root).table(name)
    if name in PARQUET_TABLES:
        fs, _ = filesystem(lake_root)
        path = fs_path(lake_root, location)
        if fs.get_file_info(path).type.name == "NotFound":
            return None
        return ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive",
                          exclude_invalid_files=False, ignore_prefixes=[".", "_"])

    from deltalake.exceptions import TableNotFoundError

    from lake_schemas.storage import delta_dataset

    try:
        return delta_dataset(location)
    except TableNotFoundError:
        return None


def available_tables(lake_root: str) -> list:
    return [name for name in TABLES if table_dataset(lake_root, name) is not None]


def query(sql: str, lake_root: Optional[str] = None, output: str = "arrow"):
    """Run ``sql`` over the lake; return an Arrow table (or pandas with ``output="pandas"``)."""
    import duckdb

    from .settings import Settings

    root = Settings.resolve(lake_root, bootstrap="unused").lake_root if lake_root is None else lake_root
    con = duckdb.connect()
    referenced = {name for name in TABLES if re.search(rf"\b{name}\b", sql, re.IGNORECASE)}
    for name in sorted(referenced):
        dataset = table_dataset(root, name)
        if dataset is None:
            raise LakeError(f"table {name} does not exist yet under {root} (nothing has been written to it)")
        con.register(name, dataset)
    try:
        relation = con.sql(sql)
        result = relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise LakeError(f"query failed: {first}") from None
    if isinstance(result, pa.RecordBatchReader):
        result = result.read_all()
    return result.to_pandas() if output == "pandas" else result
