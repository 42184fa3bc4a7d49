"""Bring a lake's Delta tables up to this version's schemas (``lake migrate``).

A column this version added to a table is appended after the older ones
(``lake_schemas.tables.LINEAGE_FIELDS`` for Silver): an older table's schema
is a prefix of the current one. Such a table is migrated in place with
Delta's ``ADD COLUMN`` (one commit, no data file rewritten, the old versions
kept for time travel); its older rows read the new columns as null. Anything
else (a column missing in the middle, a changed type, a column this version
does not know, a new column that may not be null) is not guessed at: the
plan names it and nothing is changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa

from lake_core.delta import with_commit_retries
from lake_schemas.catalog import TABLE_DOCS
from lake_schemas.paths import PARQUET_TABLES, TABLES, join

__all__ = ["TablePlan", "plan_migrations", "apply_migrations"]

CURRENT, MISSING, ADD_COLUMNS, INCOMPATIBLE = "current", "missing", "add columns", "incompatible"


@dataclass
class TablePlan:
    name: str
    path: str
    state: str  # CURRENT | MISSING | ADD_COLUMNS | INCOMPATIBLE
    add: list = field(default_factory=list)  # pa.Field, in schema order (ADD_COLUMNS)
    detail: str = ""
    version_after: Optional[int] = None  # the table's version once migrated

    def to_json(self) -> dict:
        return {
            "table": self.name,
            "path": self.path,
            "state": self.state,
            "add": [f.name for f in self.add],
            "detail": self.detail,
            "version_after": self.version_after,
        }


def _delta_fields(schema: pa.Schema) -> list:
    from deltalake import Schema

    return json.loads(Schema.from_arrow(schema).to_json())["fields"]


def _plan_table(name: str, path: str, expected: pa.Schema) -> TablePlan:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(path):
        return TablePlan(name, path, MISSING, detail="no table yet (the job that writes it creates it)")
    have = json.loads(DeltaTable(path).schema().to_json())["fields"]
    want = _delta_fields(expected)
    key = lambda f: (f["name"], f["type"])  # noqa: E731 - the shape two schemas are compared by
    if [key(f) for f in have] == [key(f) for f in want]:
        return TablePlan(name, path, CURRENT)
    prefix = [key(f) for f in want[: len(have)]] == [key(f) for f in have]
    if not prefix or len(have) > len(want):
        names = {f["name"] for f in want}
        unknown = [f["name"] for f in have if f["name"] not in names]
        detail = f"columns this version does not know: {', '.join(unknown)}" if unknown else ""
        detail = detail or "its columns are not a prefix of this version's (a type or an order changed)"
        return TablePlan(name, path, INCOMPATIBLE, detail=detail)
    new = [expected.field(f["name"]) for f in want[len(have) :]]
    required = [f.name for f in new if not f.nullable]
    if required:
        return TablePlan(
            name, path, INCOMPATIBLE, detail=f"new columns that may not be null, cannot be added: {', '.join(required)}"
        )
    return TablePlan(name, path, ADD_COLUMNS, add=new, detail="older rows read the new columns as null")


def plan_migrations(lake_root: str) -> list:
    """One ``TablePlan`` per Delta table of the contract, in the contract's order."""
    plans = []
    for doc in TABLE_DOCS:
        if doc.name in PARQUET_TABLES:
            continue
        relative = doc.path or TABLES.get(doc.name)
        if relative is None:
            continue
        plans.append(_plan_table(doc.name, join(lake_root, relative), doc.schema))
    return plans


def apply_migrations(plans: list) -> list:
    """Add the planned columns (one Delta commit per table); the plans, with ``version_after`` set."""
    from deltalake import DeltaTable, Schema

    for plan in plans:
        if plan.state != ADD_COLUMNS:
            continue

        def add(plan: TablePlan = plan) -> Any:
            table = DeltaTable(plan.path)
            # A concurrent migration may have added them meanwhile: add only what is still missing.
            present = {f.name for f in table.schema().fields}
            missing = [f for f in plan.add if f.name not in present]
            if missing:
                table.alter.add_columns(list(Schema.from_arrow(pa.schema(missing)).fields))
            return DeltaTable(plan.path).version()

        plan.version_after = with_commit_retries(add, f"add {', '.join(f.name for f in plan.add)} to {plan.name}")
    return plans
