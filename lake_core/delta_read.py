"""Reading a few columns of a Delta table's files, chosen by the Delta log's statistics.

deltalake's pyarrow dataset trips over the string_view statistics of files
deltalake rewrote (pyarrow 25) when a filter compares strings, and reads
every column of a wide table to count a few. ``read_columns`` asks the log
which files may hold the rows (``file_pruning_predicate``), reads only the
columns asked for from each, takes partition values from the file's path,
and reads a column a file lacks as nulls. Filter the rows in memory after.
"""

from __future__ import annotations

from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from lake_core.storage import filesystem, fs_path
from lake_schemas import LakePaths
from lake_schemas import tables as contract

__all__ = ["read_columns"]

_SCHEMAS = {
    "silver_telemetry": contract.SILVER_SCHEMA,
    "silver_quarantine": contract.QUARANTINE_SCHEMA,
    "gold_vehicle_hourly": contract.GOLD_VEHICLE_HOURLY_SCHEMA,
    "gold_zone_hourly": contract.GOLD_ZONE_HOURLY_SCHEMA,
    "gold_vehicle_state": contract.GOLD_VEHICLE_STATE_SCHEMA,
    "ledger_hours": contract.LEDGER_HOURS_SCHEMA,
}


def _contract_schema(name: str) -> pa.Schema:
    return _SCHEMAS[name]


def read_columns(
    lake_root: str,
    name: str,
    columns: list,
    predicate: str,
    path: Optional[str] = None,
    schema: Optional[pa.Schema] = None,
    version: Optional[int] = None,
    dictionary: tuple = (),
) -> pa.Table:
    """``columns`` of the files of Delta table ``name`` whose statistics may match ``predicate``.

    Files are read directly (the Delta log chose them): deltalake's dataset trips over the
    string_view statistics of files it rewrote (pyarrow 25). A partition column comes from the
    file's path; a column a file lacks (written before the lineage columns existed) reads as nulls.
    ``path`` and ``schema`` name a table that is not one of the contract's (by ``name``); ``version``
    reads an earlier version (time travel). Columns named in ``dictionary`` come as
    ``dictionary<int32, string>`` as Parquet stores them (no million-string decode for a column of a
    few hundred values).
    """
    from deltalake import DeltaTable

    path = path or LakePaths(lake_root).table(name)
    if not DeltaTable.is_deltatable(path):
        contract = schema or _contract_schema(name)
        return pa.schema([contract.field(c) for c in columns]).empty_table()
    table = DeltaTable(path) if version is None else DeltaTable(path, version=version)
    fs, _ = filesystem(lake_root)
    full = _arrow_schema(table)
    coded = pa.dictionary(pa.int32(), pa.string())
    schema = pa.schema([full.field(c).with_type(coded) if c in dictionary else full.field(c) for c in columns])
    schema = pa.schema([f.with_nullable(True) for f in schema])
    parts = []
    for uri in table.file_uris(file_pruning_predicate=predicate):
        partition_values = dict(p.split("=", 1) for p in uri.split("/") if "=" in p)
        with fs.open_input_file(fs_path(lake_root, uri)) as handle:
            have = pq.read_schema(handle).names
            read = [c for c in columns if c in have]
            part = pq.read_table(handle, columns=read, read_dictionary=[c for c in dictionary if c in read])
        arrays = []
        for c in columns:
            kind = schema.field(c).type
            if c in have:
                arrays.append(part[c].cast(kind))
            elif c in partition_values:
                plain = kind.value_type if pa.types.is_dictionary(kind) else kind
                value = pa.scalar(partition_values[c]).cast(plain)
                arrays.append(pa.array([value.as_py()] * part.num_rows, plain).cast(kind))
            else:
                arrays.append(pa.nulls(part.num_rows, kind))
        parts.append(pa.table(arrays, schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _arrow_schema(table: Any) -> pa.Schema:
    schema = table.schema().to_arrow()
    schema = schema if isinstance(schema, pa.Schema) else pa.schema(schema)
    return pa.schema([f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f for f in schema])
