"""The conservation ledger's equations (contract section 10), as data.

Each row of ``ledger_hours`` (``tables.LEDGER_HOURS_SCHEMA``) is one hour,
Kafka generation and partition. Three equations must hold on it; each is a
left side and the terms of a sum, all columns of the row:

- ``ingest``: every offset an ingest pass consumed is one row, in this hour
  or in another one the same pass wrote, or a recorded gap, or a row
  ``lake forget`` erased.
- ``silver``: every Bronze row of the hour is a new Silver row, a
  quarantined row, a duplicate, or a lon signal folded into its lat's row;
  an erasure (``lake forget``) removes rows on both sides and is counted on
  both (``erased_bronze``, ``erased_silver``).
- ``gold``: Gold's ``event_count`` of the hour (event time) is the number
  of Silver rows of the hour. Rows that reached Silver after Gold last ran
  for the day are *late*: explained, not an imbalance, until Gold runs again.

A stage that has not run for the hour yet (no Silver publication, no Gold
day) leaves its equation *pending*, not failed.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Equation", "EQUATIONS", "EXIT_IMBALANCE"]

#: ``lake ledger`` exits with this when an equation does not hold.
EXIT_IMBALANCE = 6


class Equation(NamedTuple):
    name: str
    left: str  # a column
    terms: tuple  # columns whose sum must equal ``left``; a leading "-" subtracts the column
    stage: str  # the column that is null until the stage ran for the row: then the equation is pending
    meaning: str

    def describe(self) -> str:
        text = " + ".join(self.terms).replace("+ -", "- ")
        return f"{self.left} = {text}"


EQUATIONS: tuple = (
    Equation(
        "ingest",
        "offsets_consumed",
        ("bronze_rows", "rejects", "other_hours_rows", "gap_records", "erased_bronze", "erased_rejects"),
        "offsets_consumed",
        "every Kafka offset the ingest consumed is exactly one Bronze or rejects row, or a recorded gap",
    ),
    Equation(
        "silver",
        "bronze_rows",
        ("silver_new", "quarantined", "duplicates", "paired_positions", "erased_silver", "-erased_bronze"),
        "silver_published_at",
        "every Bronze row is a new Silver row, quarantined, a duplicate or a paired position",
    ),
    Equation(
        "gold",
        "gold_event_count",
        ("silver_rows",),
        "gold_published_at",
        "Gold's event_count of the hour is the number of Silver rows of the hour",
    ),
)
