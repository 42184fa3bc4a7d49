"""What a gate found, as plain data: importable (and unpicklable) without Great Expectations,
so a job can receive a gate's result from the worker process that ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa

from lake_schemas.rules import expectations_for

__all__ = ["RuleResult", "GateResult", "Batch"]


@dataclass
class RuleResult:
    rule: str
    action: str  # warn | drop | fail
    success: bool
    expectation: str
    column: Optional[str]
    detail: str


@dataclass
class GateResult:
    layer: str  # "silver", "gold", "bronze"
    key: str  # the hour or day validated
    rules: list = field(default_factory=list)
    docs: Optional[str] = None  # Data Docs index (local lakes)
    summary_path: Optional[str] = None

    @property
    def failed(self) -> list:
        return [r for r in self.rules if r.action == "fail" and not r.success]

    @property
    def warnings(self) -> list:
        return [r for r in self.rules if r.action == "warn" and not r.success]

    @property
    def dropped(self) -> dict:
        return {r.rule: r.detail for r in self.rules if r.action == "drop"}

    @property
    def success(self) -> bool:
        return not self.failed

    def describe_failures(self) -> str:
        return "; ".join(
            f"{r.rule} ({r.expectation}{' on ' + r.column if r.column else ''}: {r.detail})" for r in self.failed
        )


@dataclass
class Batch:
    """One dataframe to validate against the rules of ``table`` with ``scope``.

    ``schema``: the table's full schema when ``data`` holds only some of its
    columns (``slim``); the schema rules (``columns_match``) check it.
    """

    table: str
    scope: str
    data: pa.Table
    schema: Optional[pa.Schema] = None

    @property
    def full_schema(self) -> pa.Schema:
        return self.schema if self.schema is not None else self.data.schema

    def slim(self) -> "Batch":
        """This batch with only the columns its rules read (and its full schema), for sending elsewhere.

        A Silver hour is some 30 columns, of which the rules read about half;
        the gate process then receives (a pickled copy of) only those.
        """
        used = {c for r in expectations_for(self.table) if r.scope == self.scope for c in r.columns}
        keep = [c for c in self.data.column_names if c in used]
        if len(keep) == self.data.num_columns:
            return self
        return Batch(self.table, self.scope, self.data.select(keep), self.full_schema)
