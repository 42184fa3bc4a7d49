"""The tasks of ``telemetry_silver_to_gold``: one Silver day -> Gold.

    wait_for_silver_day -> publish_gold -> check_ledger -> record_gold_day

How the daily run knows its 24 hours are done: from the lake, not from
Airflow's database. An hour is settled when its Silver publication is
recorded (``run_log``, written by the hourly DAG) or when its Bronze hour is
empty for good (``bronze_hours``: the ingest moved past it without data,
which is also when the hourly DAG skips it). So hours published by a
backfill in another Airflow, or before the metadata database was reset,
count; and a day whose hour failed its gate waits, and then fails by its
timeout, naming the hours it waited for, instead of aggregating a day with
a hole.
"""

from __future__ import annotations

import datetime as _dt
import logging

from lake.orchestration.beam_jobs import run_job
from lake.orchestration.config import job_config
from lake.orchestration.intervals import HOUR, hour_start_ms, interval_day
from lake.orchestration.ledger_gate import ledger_gate
from lake.orchestration.run_log import record_gold_day as record
from lake.orchestration.run_log import silver_hours_recorded
from lake_core.bronze.readiness import HourState, bronze_hour_state
from lake_core.gold_alerts import publish_alerts_day
from lake_core.ledger import hours_of_day
from lake_core.settings import env
from lake_schemas import LakePaths
from lake_schemas.hot import DEFAULT_HOT_DSN

__all__ = [
    "day_hours_pending",
    "silver_day_has_files",
    "silver_day_ready",
    "publish_gold",
    "check_ledger_day",
    "record_gold_day",
    "copy_alerts",
    "gold_published",
]

LOG = logging.getLogger(__name__)


def day_hours_pending(lake_root: str, day: _dt.date) -> list:
    """The hours of ``day`` (``2026-03-01T08``...) neither published to Silver nor empty for good."""
    recorded = silver_hours_recorded(lake_root, day)
    start = _dt.datetime.combine(day, _dt.time(0), _dt.timezone.utc)
    pending = []
    for i in range(24):
        hour = (start + i * HOUR).strftime("%Y-%m-%dT%H")
        if hour not in recorded and bronze_hour_state(lake_root, hour_start_ms(hour)) is not HourState.EMPTY:
            pending.append(hour)
    return pending


def silver_day_has_files(lake_root: str, day: _dt.date) -> bool:
    from deltalake import DeltaTable

    path = LakePaths(lake_root).table("silver_telemetry")
    return DeltaTable.is_deltatable(path) and bool(
        DeltaTable(path).file_uris(file_pruning_predicate=[("event_date", "=", day.isoformat())])
    )


def silver_day_ready(data_interval_start, data_interval_end, params):
    """The sensor's poke: done when the day's 24 hours are settled (or at once with ``params["partial_day"]``)."""
    from airflow.sdk import PokeReturnValue

    params = params or {}
    day = interval_day(data_interval_start, data_interval_end, params)
    pending = day_hours_pending(job_config().lake_root, day)
    hours = ", ".join(h[11:] for h in pending)
    if pending and params.get("partial_day"):
        LOG.warning(
            "Silver day %s: %d hour(s) not published yet (%s); aggregating anyway (partial_day)",
            day,
            len(pending),
            hours,
        )
        pending = []
    elif pending:
        LOG.info("Silver day %s: waiting for %d hour(s) to be published or closed empty: %s", day, len(pending), hours)
    else:
        LOG.info("Silver day %s: all 24 hours are published or empty", day)
    return PokeReturnValue(is_done=not pending, xcom_value={"date": day.isoformat()})


def gold_published(report: dict) -> dict:
    counters = report.get("counters", {})
    return {
        "date": report["date"],
        "silver_version": report.get("silver_version"),
        "rows_in": int(counters.get("silver_rows", 0)),
        "vehicle_hours": int(counters.get("vehicle_hours", 0)),
        "zone_hours": int(counters.get("zone_hours", 0)),
        "vehicles": int(counters.get("vehicles", 0)),
        "state_inserted": int(counters.get("state_inserted", 0)),
        "summary": report.get("summary"),
    }


def publish_gold(silver_day: dict) -> dict:
    """The Gold job for the day (its gate runs before its commit); skipped for a day Silver has no rows of."""
    from airflow.sdk.exceptions import AirflowSkipException

    config = job_config()
    day = _dt.date.fromisoformat(silver_day["date"])
    if not silver_day_has_files(config.lake_root, day):
        raise AirflowSkipException(f"Silver has no rows for {day}: nothing to aggregate")
    report = run_job("gold", {"date": day.isoformat()}, config)
    LOG.info("%s", report["summary"])
    return gold_published(report)


def copy_alerts(published: dict) -> int:
    """The day's alerts from the hot store (``LAKE_HOT_DSN``) into ``gold_alerts``, gated (contract section 9)."""
    config = job_config()
    day = _dt.date.fromisoformat(published["date"])
    count = publish_alerts_day(env("LAKE_HOT_DSN") or DEFAULT_HOT_DSN, config.lake_root, day)
    LOG.info("gold_alerts %s: %d alert(s)", published["date"], count)
    return count


def check_ledger_day(published: dict) -> dict:
    """The ledger gate after the publish: the day's 24 hours accounted for (``lake ledger --date``)."""
    return ledger_gate(job_config().lake_root, hours_of_day(_dt.date.fromisoformat(published["date"])))


def record_gold_day(published: dict, run_id: str) -> str:
    path = record(job_config().lake_root, published["date"], published, run_id)
    LOG.info("recorded %s: %s", path, published["summary"])
    return path
