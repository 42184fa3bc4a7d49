"""SQL over the lake's tables (contract section 6), for the CLI and notebooks.

    from lake.query import query
    query("SELECT vehicle_id, count(*) FROM bronze_telemetry GROUP BY 1").to_pandas()

Bronze's hive-partitioned Parquet is scanned as an Arrow dataset. A Delta
table on a local lake is a view over exactly the Parquet files its current
version holds (``deltalake`` lists them; DuckDB's delta extension cannot be
downloaded offline) read by DuckDB's own Parquet reader: deltalake 1.6 writes
strings as Arrow ``string_view``, which pyarrow 25 cannot compare with a
string literal, so a pushed-down ``WHERE vehicle_id = 'V1'`` fails on the
Arrow route. Remote lakes (s3://, gs://) take the Arrow route.
"""
from __future__ import annotations

import re
from typing import Optional

import pyarrow as pa

from lake_schemas import TABLES, LakePaths
from lake_schemas.paths import PARQUET_TABLES
from lake_schemas.storage import filesystem, fs_path, is_local

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


def _duckdb_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    return "VARCHAR"


def _plain(t: pa.DataType) -> pa.DataType:
    if t == pa.string_view() or t == pa.large_string():
        return pa.string()
    if t == pa.binary_view():
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(_plain(t.value_type))
    return t


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _register_delta_files(con, name: str, location: str) -> bool:
    """A view of table ``name`` over its current Parquet files; False when there is no table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(location)
    except TableNotFoundError:
        return False
    schema = pa.schema(table.schema().to_arrow())
    schema = pa.schema([pa.field(f.name, _plain(f.type), f.nullable) for f in schema])
    files = table.file_uris()
    if not files:
        con.register(name, schema.empty_table())
        return True
    partitions = table.metadata().partition_columns
    columns = ", ".join('"' + c.replace('"', '""') + '"' for c in schema.names)
    source = f"read_parquet([{', '.join(_sql_text(f) for f in files)}], union_by_name = true"
    if partitions:
        types = ", ".join(f"{_sql_text(c)}: {_sql_text(_duckdb_type(schema.field(c).type))}" for c in partitions)
        source += f", hive_partitioning = true, hive_types = {{{types}}}"
    con.execute(f'CREATE VIEW "{name}" AS SELECT {columns} FROM {source})')
    return True


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
        if name not in PARQUET_TABLES and is_local(root):
            if not _register_delta_files(con, name, LakePaths(root).table(name)):
                raise LakeError(f"table {name} does not exist yet under {root} (nothing has been written to it)")
            continue
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
