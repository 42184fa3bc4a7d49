"""What a gate found, as plain data: importable (and unpicklable) without Great Expectations,
so a job can receive a gate's result from the worker process that ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import pyarrow as pa

from lake_core.storage import read_arrow_file
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
    columns (``slim``) or the rows come in ``parts``; the schema rules
    (``columns_match``) check it.

    ``parts`` (instead of ``data``): the rows in chunks, validated one after
    the other so a gate's memory is one chunk's, whatever the batch's size;
    each chunk is a ``pa.Table`` or a list of Arrow IPC files on the lake's
    filesystem (a job's staged shards), read with only the columns the rules
    use. The results of a rule are summed over the chunks; so the chunks must
    split the rows along the keys of the ``unique`` rules (Silver's shards
    hold every row of their vehicles), and a chunked batch may have no rule
    with a share (``mostly``) to meet.
    """

    table: str
    scope: str
    data: Optional[pa.Table] = None
    schema: Optional[pa.Schema] = None
    parts: Sequence[Union[pa.Table, Sequence[str]]] = ()

    @property
    def full_schema(self) -> pa.Schema:
        if self.schema is not None:
            return self.schema
        if self.data is None:
            raise ValueError(f"a batch of {self.table} in parts needs its schema")
        return self.data.schema

    def used_columns(self) -> set:
        return {c for r in expectations_for(self.table) if r.scope == self.scope for c in r.columns}

    def slim(self) -> "Batch":
        """This batch with only the columns its rules read (and its full schema), for sending elsewhere.

        A Silver hour is some 30 columns, of which the rules read about half;
        the gate process then receives (a pickled copy of) only those. Parts
        that are files stay file names: the gate reads them itself.
        """
        used = self.used_columns()

        def slimmed(table: pa.Table) -> pa.Table:
            keep = [c for c in table.column_names if c in used]
            return table if len(keep) == table.num_columns else table.select(keep)

        if self.data is None:
            parts = [slimmed(p) if isinstance(p, pa.Table) else p for p in self.parts]
            return Batch(self.table, self.scope, None, self.full_schema, parts)
        data = slimmed(self.data)
        return self if data is self.data else Batch(self.table, self.scope, data, self.full_schema)

    def chunks(self, lake_root: str) -> Iterator[pa.Table]:
        """The rows, one chunk at a time (``data`` is one chunk), with the columns the rules read."""
        if self.data is not None:
            yield self.data
            return
        used = self.used_columns()
        if not self.parts:  # no rows: the rules still run, on none
            schema = self.full_schema
            yield pa.schema([schema.field(c) for c in schema.names if c in used]).empty_table()
        for part in self.parts:
            if isinstance(part, pa.Table):
                yield part.select([c for c in part.column_names if c in used])
            else:
                columns = [c for c in self.full_schema.names if c in used]
                tables = [read_arrow_file(lake_root, path, columns) for path in part]
                yield pa.concat_tables(tables) if tables else self.full_schema.empty_table()
