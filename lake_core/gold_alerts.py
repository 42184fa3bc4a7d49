"""``gold_alerts``: the daily copy of the hot store's alerts into the lake (contract section 9).

The daily DAG (``telemetry_silver_to_gold``) calls ``publish_alerts_day``
after Gold: the alerts *opened* on the day (UTC), as the hot store holds
them at that moment (a later resolve of an alert opened that day shows on
the next run of that day), replace the day's partition of
``{LAKE_ROOT}/gold/alerts``, once they passed ``gold_alerts_failures`` (a
failing day publishes nothing and raises ``QualityGateFailed``, exit 5).
Re-running a day changes nothing. A hot store that does not exist yet (no
``lake stream`` ever ran against it) is an empty day, not an error.
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

import pyarrow as pa

from lake_core import hot_store as hs
from lake_core.delta import date_list_sql, open_table, with_commit_retries
from lake_core.errors import QualityGateFailed
from lake_schemas import LakePaths
from lake_schemas.hot import GOLD_ALERTS_SCHEMA, GOLD_ALERTS_TABLE, gold_alerts_failures

__all__ = ["alerts_of_day", "publish_alerts_day"]

LOG = logging.getLogger(__name__)


def alerts_of_day(dsn: str, day: _dt.date) -> pa.Table:
    """The alerts opened on ``day`` (UTC), as ``GOLD_ALERTS_SCHEMA``; empty when the hot store has none."""
    try:
        conn = hs.connect(dsn)
    except hs.HotStoreUnavailable as exc:
        if "does not exist" in str(exc):
            LOG.warning("no hot store at %s: no alerts to copy", hs.redact(dsn))
            return GOLD_ALERTS_SCHEMA.empty_table()
        raise
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('hot.alerts') IS NOT NULL")
            if not cur.fetchone()[0]:
                return GOLD_ALERTS_SCHEMA.empty_table()
            cur.execute(
                "SELECT alert_id::text, vehicle_id, rule, severity, (extract(epoch FROM opened_at) * 1000)::bigint, "
                "(extract(epoch FROM resolved_at) * 1000)::bigint, details::text FROM hot.alerts "
                "WHERE opened_at >= %s AND opened_at < %s ORDER BY opened_at, alert_id",
                (f"{day.isoformat()} 00:00:00+00", f"{(day + _dt.timedelta(days=1)).isoformat()} 00:00:00+00"),
            )
            rows = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    columns: list[Any] = [list(c) for c in zip(*rows)] if rows else [[] for _ in range(7)]
    ts = pa.timestamp("ms", tz="UTC")
    return pa.table(
        [
            pa.array(columns[0], pa.string()),
            pa.array(columns[1], pa.string()),
            pa.array(columns[2], pa.string()),
            pa.array(columns[3], pa.string()),
            pa.array(columns[4], pa.int64()).cast(ts),
            pa.array(columns[5], pa.int64()).cast(ts),
            pa.array(columns[6], pa.string()),
            pa.array([day] * len(rows), pa.date32()),
        ],
        schema=GOLD_ALERTS_SCHEMA,
    )


def publish_alerts_day(dsn: str, lake_root: str, day: _dt.date) -> int:
    """Gate the day's alerts, then replace the day in ``gold/alerts``; the number of rows published."""
    from deltalake import write_deltalake  # noqa: PLC0415 - delta-rs only where Delta is written

    rows = alerts_of_day(dsn, day)
    failures = gold_alerts_failures(rows)
    if failures:
        raise QualityGateFailed(f"{GOLD_ALERTS_TABLE} {day}: " + "; ".join(failures) + " (nothing published)")
    path = LakePaths(lake_root).table(GOLD_ALERTS_TABLE)

    def replace() -> None:
        table = open_table(path, GOLD_ALERTS_SCHEMA, GOLD_ALERTS_TABLE, partition_by=["event_date"])
        write_deltalake(
            table, rows, mode="overwrite", predicate=date_list_sql("event_date", [day]), partition_by=["event_date"]
        )

    with_commit_retries(replace, f"replace {day} in {GOLD_ALERTS_TABLE}")
    return rows.num_rows
