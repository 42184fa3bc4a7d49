"""The DAGs' ledger gate: after a publish, every record of its hours must be accounted for.

The same check as ``lake ledger`` (``lake_core.ledger.check_hours``): the
task fails with ``LedgerImbalance`` naming each equation that does not hold,
so the run is red and what follows it (the hour's run record, which the
daily DAG waits for; the Gold day's record) is not written.
"""

from __future__ import annotations

import logging
from collections import Counter

from lake_core.errors import LedgerImbalance
from lake_core.ledger import check_hours

__all__ = ["ledger_gate"]

LOG = logging.getLogger(__name__)


def ledger_gate(lake_root: str, hours: list) -> dict:
    """Check ``hours``; raise ``LedgerImbalance`` when an equation does not hold, else return the verdicts."""
    report = check_hours(lake_root, hours)
    statuses = Counter(f"{e.name}:{e.status}" for r in report.rows for e in r.equations)
    if not report.holds:
        raise LedgerImbalance(f"the ledger does not balance: {report.describe_imbalances()}")
    late = [f"{r.hour} p{r.kafka_partition}: {e.note}" for r in report.rows for e in r.equations if e.status == "late"]
    for line in late:
        LOG.warning("ledger: %s", line)
    LOG.info("ledger of %s..%s balances: %s", hours[0], hours[-1], dict(sorted(statuses.items())))
    return {"hours": [hours[0], hours[-1]], "rows": len(report.rows), "statuses": dict(statuses), "late": late}
