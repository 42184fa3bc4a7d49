"""Row-for-row comparison of two outputs: the project's tables and a baseline's.

Both sides are brought to one representation first (timestamps as epoch
ms, dates as ``date32``, every string type as ``string``), sorted on the
table's key, then compared column by column; floats agree within a relative
and absolute tolerance (two engines may sum in another order or parse the
last digit of a JSON number differently), everything else exactly, nulls
included.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["normalize", "differences", "sliced_differences", "read_parquet_dir", "parquet_dataset"]

#: Rows of one side ``sliced_differences`` holds at once (each row is compared in one slice).
SLICE_ROWS = 2_000_000

REL_TOL = 1e-9
ABS_TOL = 1e-9


def _normal_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return pa.int64()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return _normal_type(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(_normal_type(t.value_type))
    if pa.types.is_integer(t):
        return pa.int64()
    return t


def _normal_column(column: pa.ChunkedArray) -> pa.Array:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.dictionary_decode()
        t = column.type
    if pa.types.is_timestamp(t):
        column = pc.cast(column.cast(pa.timestamp(t.unit, tz=t.tz)), pa.timestamp("ms", tz=t.tz), safe=False)
        return column.cast(pa.int64())
    return column.cast(_normal_type(t))


def normalize(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``columns`` of ``table`` in one representation (see the module docstring)."""
    return pa.table({c: _normal_column(table[c]) for c in columns})


def _floats_differ(a: pa.Array, b: pa.Array) -> np.ndarray:
    x = a.to_numpy(zero_copy_only=False).astype(np.float64)
    y = b.to_numpy(zero_copy_only=False).astype(np.float64)
    null_a = np.asarray(a.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    null_b = np.asarray(b.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    with np.errstate(invalid="ignore"):
        close = np.isclose(x, y, rtol=REL_TOL, atol=ABS_TOL, equal_nan=True)
    return (null_a != null_b) | (~null_a & ~null_b & ~close)


def _others_differ(a: pa.Array, b: pa.Array) -> np.ndarray:
    if pa.types.is_list(a.type):  # lists of strings, compared by their joined text and their length
        a = pc.binary_join_element_wise(
            pc.binary_join(a, "\x1f"), pc.cast(pc.list_value_length(a), pa.string()), "\x1e"
        )
        b = pc.binary_join_element_wise(
            pc.binary_join(b, "\x1f"), pc.cast(pc.list_value_length(b), pa.string()), "\x1e"
        )
    equal = pc.equal(a, b)
    both_null = pc.and_(a.is_null(), b.is_null())
    same = pc.or_(equal.fill_null(False), both_null)
    return ~np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)


def differences(
    name: str, ours: pa.Table, theirs: pa.Table, keys: Sequence[str], columns: Sequence[str], limit: int = 5
) -> list[str]:
    """What differs between ``ours`` (the project) and ``theirs`` (the baseline); empty when they agree."""
    if ours.num_rows == theirs.num_rows == 0:
        return []
    if ours.num_rows != theirs.num_rows:
        found = [f"{name}: {ours.num_rows:,} rows from the job, {theirs.num_rows:,} from the baseline"]
        a = normalize(ours, keys)
        b = normalize(theirs, keys)
        only_ours = a.join(b, keys=list(keys), join_type="left anti")
        only_theirs = b.join(a, keys=list(keys), join_type="left anti")
        if only_ours.num_rows:
            found.append(f"{name}: only in the job's output, e.g. {only_ours.slice(0, 3).to_pylist()}")
        if only_theirs.num_rows:
            found.append(f"{name}: only in the baseline's output, e.g. {only_theirs.slice(0, 3).to_pylist()}")
        return found
    order = [(k, "ascending") for k in keys]
    a = normalize(ours, columns).sort_by(order)
    b = normalize(theirs, columns).sort_by(order)
    found = []
    for c in columns:
        x, y = a[c].combine_chunks(), b[c].combine_chunks()
        if x.type != y.type:
            found.append(f"{name}.{c}: type {x.type} in the job's output, {y.type} in the baseline's")
            continue
        differ = _floats_differ(x, y) if pa.types.is_floating(x.type) else _others_differ(x, y)
        bad = np.flatnonzero(differ)
        if len(bad):
            shown = [
                (a.select(list(keys)).slice(int(i), 1).to_pylist()[0], x[int(i)].as_py(), y[int(i)].as_py())
                for i in bad[:limit]
            ]
            found.append(f"{name}.{c}: {len(bad):,} rows differ, e.g. (key, job, baseline) {shown}")
    return found


def _vehicles_between(dataset: Any, columns: Sequence[str], low: Optional[str], high: Optional[str]) -> pa.Table:
    """The rows of ``dataset`` whose ``vehicle_id`` is in ``[low, high)`` (None: unbounded), scanned batch by batch."""
    parts = []
    for batch in dataset.to_batches(columns=list(columns)):
        vehicle = batch.column("vehicle_id").cast(pa.string())
        keep = pc.is_valid(vehicle)
        if low is not None:
            keep = pc.and_(keep, pc.greater_equal(vehicle, low))
        if high is not None:
            keep = pc.and_(keep, pc.less(vehicle, high))
        parts.append(batch.filter(keep))
    if not parts:
        return pa.table({c: pa.array([], pa.null()) for c in columns})
    return pa.Table.from_batches(parts)


def sliced_differences(
    name: str, ours: Any, theirs: Any, keys: Sequence[str], columns: Sequence[str], slice_rows: int = SLICE_ROWS
) -> list[str]:
    """``differences`` of two pyarrow datasets keyed by ``vehicle_id``, one range of vehicles at a time.

    A 20M-event hour's Silver is some 13 GB per side in memory: compared whole, the check would need
    more than the machine has. Each slice scans both datasets again (time for memory).
    """
    found = []
    for side, dataset in (("the job's", ours), ("the baseline's", theirs)):
        nulls = dataset.count_rows(filter=pc.field("vehicle_id").is_null())
        if nulls:
            found.append(f"{name}: {nulls:,} rows without a vehicle_id in {side} output")
    vehicles = pa.chunked_array(
        [b.column("vehicle_id").cast(pa.string()) for b in ours.to_batches(columns=["vehicle_id"])], pa.string()
    )
    distinct = sorted(v for v in pc.unique(vehicles).to_pylist() if v is not None)
    slices = max(1, min(len(distinct), -(-len(vehicles) // slice_rows)))
    bounds = [distinct[i * len(distinct) // slices] for i in range(1, slices)]
    for low, high in zip([None, *bounds], [*bounds, None]):
        found += differences(
            name if slices == 1 else f"{name}[vehicles {low or ''}..{high or ''}]",
            _vehicles_between(ours, columns, low, high),
            _vehicles_between(theirs, columns, low, high),
            keys,
            columns,
        )
    return found


def parquet_dataset(directory: str, columns: Sequence[str]) -> Any:
    """Every Parquet file under ``directory`` as a dataset (no files: an empty one of ``columns``)."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(directory, format="parquet", partitioning=None)
    if not dataset.files:
        return ds.dataset(pa.table({c: pa.array([], pa.string()) for c in columns}))
    return dataset


def read_parquet_dir(directory: str, columns: Sequence[str]) -> pa.Table:
    """Every Parquet file under ``directory`` (a baseline's output), ``columns`` only."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(directory, format="parquet", partitioning=None)
    if not dataset.files:
        return pa.table({c: pa.array([], pa.null()) for c in columns})
    return dataset.to_table(columns=list(columns))
