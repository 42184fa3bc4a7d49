"""SQL over the lake's tables (contract section 6), for the CLI and notebooks.

    from lake.query import query
    query("SELECT vehicle_id, count(*) FROM bronze_telemetry GROUP BY 1").to_pandas()

Bronze's hive-partitioned Parquet is scanned as an Arrow dataset. A Delta
table is a view over exactly the Parquet files its current version holds
(``deltalake`` lists them; DuckDB's delta extension cannot be downloaded
offline) read by DuckDB's own Parquet reader: deltalake 1.6 writes strings
as Arrow ``string_view``, which pyarrow 25 cannot compare with a string
literal, so a ``WHERE vehicle_id = 'V1'`` pushed into an Arrow dataset of
those files fails. On a remote lake (s3://, gs://) DuckDB reads the files
through the lake's own pyarrow filesystem, registered with DuckDB as an
fsspec filesystem (DuckDB's httpfs is an extension it cannot download), so
the same credentials and endpoint apply (``AWS_*``, ``GOOGLE_*``).

Either way DuckDB may open nothing but the folders of the tables the SQL
names (``allowed_directories``, locked).
"""

from __future__ import annotations

import os
import re
from typing import Optional

import pyarrow as pa
from fsspec.implementations.arrow import ArrowFSWrapper

from lake_core.errors import LakeError
from lake_core.settings import Settings
from lake_core.storage import delta_dataset, filesystem, fs_path, is_local
from lake_schemas import TABLES, LakePaths
from lake_schemas.paths import PARQUET_TABLES

__all__ = ["query", "table_dataset"]


def table_dataset(lake_root: str, name: str):
    """The Arrow dataset of table ``name``, or None when the table does not exist yet."""
    import pyarrow.dataset as ds

    location = LakePaths(lake_root).table(name)
    if name in PARQUET_TABLES:
        fs, _ = filesystem(lake_root)
        path = fs_path(lake_root, location)
        if fs.get_file_info(path).type.name == "NotFound":
            return None
        return ds.dataset(
            path,
            filesystem=fs,
            format="parquet",
            partitioning="hive",
            exclude_invalid_files=False,
            ignore_prefixes=[".", "_"],
        )

    from deltalake.exceptions import TableNotFoundError

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


class _S3Files(ArrowFSWrapper):
    """The lake's pyarrow S3 filesystem as DuckDB's fsspec hook sees one (it routes ``s3://`` to it).

    DuckDB checks ``allowed_directories`` on the path as written, and pyarrow
    resolves ``..`` in a key: ``s3://lake/silver/telemetry/../../_devices/x``
    would pass the check and read outside the table. Every path fsspec is
    handed goes through ``_strip_protocol``, which refuses such segments.
    """

    protocol = ("s3",)

    @classmethod
    def _strip_protocol(cls, path):
        stripped = super()._strip_protocol(path)
        if any(part in ("..", ".") for part in str(stripped).split("/")):
            raise PermissionError(f"{path}: relative path segments are not allowed")
        return stripped


class _GcsFiles(_S3Files):
    protocol = ("gs", "gcs")


def _lake_files(root: str) -> ArrowFSWrapper:
    wrapper = _GcsFiles if root.split("://", 1)[0] in ("gs", "gcs") else _S3Files
    return wrapper(filesystem(root)[0])


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


def _confine(con, table_locations: list[str]) -> None:
    """The SQL reads the named tables and nothing else: no other file (``_devices``' credentials,
    ``/etc``), no COPY out, no extension; locked so the query cannot undo it."""
    folders = [(os.path.abspath(loc) if is_local(loc) else loc.rstrip("/")) + "/" for loc in table_locations]
    con.execute("SET allowed_directories = " + "[" + ", ".join(_sql_text(f) for f in folders) + "]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def query(sql: str, lake_root: Optional[str] = None, output: str = "arrow"):
    """Run ``sql`` over the lake; return an Arrow table (or pandas with ``output="pandas"``)."""
    import duckdb

    root = Settings.resolve(lake_root, bootstrap="unused").lake_root if lake_root is None else lake_root
    con = duckdb.connect()
    referenced = {name for name in TABLES if re.search(rf"\b{name}\b", sql, re.IGNORECASE)}
    if not is_local(root):
        con.register_filesystem(_lake_files(root))
    for name in sorted(referenced):
        if name not in PARQUET_TABLES:
            if not _register_delta_files(con, name, LakePaths(root).table(name)):
                raise LakeError(f"table {name} does not exist yet under {root} (nothing has been written to it)")
            continue
        dataset = table_dataset(root, name)
        if dataset is None:
            raise LakeError(f"table {name} does not exist yet under {root} (nothing has been written to it)")
        con.register(name, dataset)
    _confine(con, [LakePaths(root).table(name) for name in referenced])
    try:
        relation = con.sql(sql)
        result = relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        # an error raised in the fsspec filesystem (a remote lake) arrives as a Python traceback: its last line says it
        raise LakeError(f"query failed: {lines[-1] if lines[0].startswith('Traceback') else lines[0]}") from None
    if isinstance(result, pa.RecordBatchReader):
        result = result.read_all()
    return result.to_pandas() if output == "pandas" else result
