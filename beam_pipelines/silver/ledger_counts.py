"""Per Kafka partition counts of the rows the Silver job drops, for the conservation ledger.

The job's counters (``duplicates``, ``positions_paired``) are per hour; the
ledger (``lake_core.ledger``) balances each hour per Bronze generation and
Kafka partition, so the cleaning step also counts the rows it drops by
where they came from. The counts travel in the batch's ``stats`` under
``ledger.<what>.g<generation>.p<partition>`` and are taken out again
(``partition_counts``) before the stats become the job's counters.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas import BronzeFileName

__all__ = ["PREFIX", "count_rows", "partition_counts", "without_partition_counts"]

PREFIX = "ledger."


def count_rows(table: pa.Table, rows: Any, what: str, stats: Counter) -> None:
    """Add the rows ``rows`` of ``table`` (``kafka_partition``, ``bronze_file``) to ``stats`` by partition."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return
    taken = table.select(["bronze_file", "kafka_partition"])
    if len(rows) != table.num_rows:  # every row (the hour's candidates): no copy of a million file names
        taken = taken.take(pa.array(rows))
    # grouped by the file name's dictionary code: a few hundred names among a million rows
    taken = taken.set_column(0, "bronze_file", pc.dictionary_encode(taken["bronze_file"]))
    groups = taken.group_by(["bronze_file", "kafka_partition"], use_threads=False).aggregate([([], "count_all")])
    for name, partition, n in zip(*(groups[c].to_pylist() for c in ("bronze_file", "kafka_partition", "count_all"))):
        parsed = BronzeFileName.parse(name or "")
        stats[f"{PREFIX}{what}.g{parsed.generation if parsed else 0}.p{partition}"] += n


def partition_counts(stats: dict, what: str) -> dict:
    """``{(generation, partition): n}`` of the counts ``count_rows`` added for ``what``."""
    found: dict = {}
    head = f"{PREFIX}{what}.g"
    for key, value in stats.items():
        if key.startswith(head):
            generation, partition = key[len(head) :].split(".p")
            found[(int(generation), int(partition))] = found.get((int(generation), int(partition)), 0) + int(value)
    return found


def without_partition_counts(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if not k.startswith(PREFIX)}
