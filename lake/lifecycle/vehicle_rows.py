"""Which rows are one vehicle's: the single rule ``lake forget`` applies to every table.

A row is vehicle V's when its ``vehicle_id`` is V, or its Kafka ``key`` is V
(Bronze and rejects: the key is the vehicle id, contract section 1). A row
whose vehicle is unknown (``vehicle_id`` null and no key: a payload that was
not JSON, or lacked the id field) is V's when its raw ``payload`` holds V as
a JSON string (``"V"``, quotes included, so ``V1`` does not match
``V10``). A payload naming V in a row that belongs to another vehicle
(e.g. as a trip id) stays: it is that vehicle's data.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

__all__ = ["payload_token", "row_filter", "delta_predicate", "plain_strings", "BY_PAYLOAD"]

#: Delta tables whose rows may lack a vehicle id but keep the raw payload.
BY_PAYLOAD = frozenset({"silver_quarantine"})


def payload_token(vehicle_id: str) -> str:
    return f'"{vehicle_id}"'


def row_filter(vehicle_id: str, columns) -> ds.Expression:
    """An expression true for V's rows and false (never null) for the others, over ``columns``."""
    vid = ds.field("vehicle_id")
    mine = vid.is_valid() & (vid == vehicle_id)
    unknown = ~vid.is_valid()
    if "key" in columns:
        key = ds.field("key")
        mine = mine | (key.is_valid() & (key == vehicle_id))
        unknown = unknown & ~key.is_valid()
    if "payload" in columns:
        payload = ds.field("payload")
        mine = mine | (unknown & payload.is_valid() & pc.match_substring(payload, payload_token(vehicle_id)))
    return mine


def delta_predicate(vehicle_id: str, table: str) -> str:
    """The same rule as a deltalake predicate (``vehicle_id`` is checked against the contract's pattern first)."""
    predicate = f"vehicle_id = '{vehicle_id}'"
    if table in BY_PAYLOAD:
        predicate += f" OR (vehicle_id IS NULL AND strpos(payload, '{payload_token(vehicle_id)}') > 0)"
    return predicate


def plain_strings(table: pa.Table) -> pa.Table:
    """``table`` with ``string_view`` columns (what deltalake's files and datasets give) as ``string``.

    pyarrow 25 has no comparison or substring kernels for ``string_view``.
    """
    schema = pa.schema(
        [f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f for f in table.schema],
        metadata=table.schema.metadata,
    )
    return table if schema.equals(table.schema) else table.cast(schema)
