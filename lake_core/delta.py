"""What the Silver and Gold jobs share about Delta tables.

- ``open_table``: create a table with its contract schema, or open it and
  refuse (``LakeDataError``) one whose schema is not the contract's;
- ``with_commit_retries``: Delta's optimistic concurrency, the caller's side:
  a commit that lost a race (``CommitFailedError``) is redone from a fresh
  snapshot, with exponential backoff and jitter;
- ``date_list_sql``: a partition predicate delta-rs prunes files with.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import time
from typing import Any, Callable, Iterable, Optional, TypeVar

import pyarrow as pa

from lake_core.errors import LakeDataError, LakeError

__all__ = [
    "open_table",
    "check_existing",
    "check_schema",
    "with_commit_retries",
    "date_list_sql",
    "CommitRetriesExhausted",
]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_COMMIT_ATTEMPTS = 10
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 3.0


class CommitRetriesExhausted(LakeError):
    """Every attempt lost its commit race; the table is unchanged by this run."""


def _describe(schema_json: dict) -> dict:
    return {
        f["name"]: f["type"] if isinstance(f["type"], str) else f["type"].get("type", str(f["type"]))
        for f in schema_json["fields"]
    }


def check_schema(table: Any, expected: pa.Schema, name: str) -> None:
    """Raise ``LakeDataError`` unless ``table`` (a DeltaTable) has ``expected``'s columns and types."""
    import json

    from deltalake import Schema

    have = json.loads(table.schema().to_json())
    want = json.loads(Schema.from_arrow(expected).to_json())
    if [(f["name"], f["type"]) for f in have["fields"]] == [(f["name"], f["type"]) for f in want["fields"]]:
        return
    have_types, want_types = _describe(have), _describe(want)
    missing = [c for c in want_types if c not in have_types]
    extra = [c for c in have_types if c not in want_types]
    changed = [
        f"{c} ({have_types[c]}, expected {want_types[c]})"
        for c in want_types
        if c in have_types and have_types[c] != want_types[c]
    ]
    parts = [
        f"missing {', '.join(missing)}" if missing else "",
        f"unexpected {', '.join(extra)}" if extra else "",
        f"changed {', '.join(changed)}" if changed else "",
    ]
    detail = "; ".join(p for p in parts if p) or "columns in another order"
    raise LakeDataError(
        f"{name} at {table.table_uri} has another schema than this version of the lake writes "
        f"({detail}); nothing was written. `lake migrate` adds the columns an older version lacked; "
        "otherwise move the table aside."
    )


def check_existing(path: str, schema: pa.Schema, name: str) -> None:
    """``check_schema`` on the table at ``path`` if there is one; never creates it."""
    from deltalake import DeltaTable

    if DeltaTable.is_deltatable(path):
        check_schema(DeltaTable(path), schema, name)


def open_table(
    path: str, schema: pa.Schema, name: str, partition_by: Optional[list[str]] = None, description: str = ""
) -> Any:
    """The Delta table at ``path``, created (empty, with ``schema``) when there is none."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(path):

        def create() -> Any:
            return DeltaTable.create(
                path,
                schema=schema,
                partition_by=partition_by,
                mode="ignore",
                name=name,
                description=description or None,
            )

        with_commit_retries(create, f"create {name}")
    table = DeltaTable(path)
    check_schema(table, schema, name)
    return table


def with_commit_retries(operation: Callable[[], T], what: str, attempts: int = DEFAULT_COMMIT_ATTEMPTS) -> T:
    """Run ``operation`` (which must re-read the table each time) until its commit wins a race."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except CommitFailedError as exc:
            if attempt == attempts:
                raise CommitRetriesExhausted(
                    f"{what}: {attempts} attempts lost a concurrent commit "
                    f"(last: {exc}); the table is unchanged by this run"
                ) from None
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * (0.5 + random.random())
            LOG.info("%s: concurrent commit (%s), retrying in %.2fs", what, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def date_list_sql(column: str, dates: Iterable[_dt.date]) -> str:
    """``column IN (DATE '2026-03-01', ...)``: a literal list delta-rs prunes partitions with.

    (A predicate comparing to the source's column alone prunes nothing when
    the MERGE streams its source.)
    """
    days = sorted(set(dates))
    if not days:
        return "FALSE"
    return f"{column} IN ({', '.join(f'DATE {d.isoformat()!r}' for d in days)})"
