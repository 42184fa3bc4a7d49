"""The tasks of ``telemetry_bronze_to_silver``: one Bronze hour -> Silver.

    wait_for_bronze_hour -> validate_bronze -> publish_silver -> check_ledger -> record_silver_hour
        -> late_gold_days -> recompute_gold (one triggered Gold run per stale day)

Each function takes what the task gets from Airflow (the data interval, an
upstream result) and returns what goes to XCom; Airflow itself is imported
only for its exceptions and sensor result.
"""

from __future__ import annotations

import logging

from lake.orchestration.beam_jobs import run_job
from lake.orchestration.config import job_config
from lake.orchestration.intervals import hour_start_ms, interval_hour
from lake.orchestration.late_data import gold_days_to_recompute
from lake.orchestration.ledger_gate import ledger_gate
from lake.orchestration.run_log import record_silver_hour as record
from lake_core.bronze.readiness import HourState, bronze_hour_state
from quality.stored import validate_bronze_hour

__all__ = [
    "bronze_hour_ready",
    "validate_bronze",
    "publish_silver",
    "check_ledger_hour",
    "record_silver_hour",
    "late_gold_days",
    "silver_published",
]

LOG = logging.getLogger(__name__)
GOLD_DAG_ID = "telemetry_silver_to_gold"


def bronze_hour_ready(data_interval_start, data_interval_end):
    """The sensor's poke: done when the hour is complete, or empty for good; its XCom says which."""
    from airflow.sdk import PokeReturnValue

    hour = interval_hour(data_interval_start, data_interval_end)
    state = bronze_hour_state(job_config().lake_root, hour_start_ms(hour))
    LOG.info("Bronze hour %s: %s", hour, state.value)
    return PokeReturnValue(is_done=state is not HourState.WAITING, xcom_value={"hour": hour, "state": state.value})


def validate_bronze(bronze: dict) -> dict:
    """The Bronze gate on the hour as stored; skips the rest of the run for an empty hour."""
    from airflow.sdk.exceptions import AirflowSkipException

    hour = bronze["hour"]
    if bronze["state"] == HourState.EMPTY.value:
        raise AirflowSkipException(
            f"Bronze hour {hour} holds no rows and the ingest has moved past it: nothing to publish"
        )
    result = validate_bronze_hour(job_config().lake_root, hour_start_ms(hour))
    LOG.info(
        "Bronze hour %s passes its gate: %d checks, warnings: %s; results: %s",
        hour,
        len(result.rules),
        [w.rule for w in result.warnings] or "none",
        result.docs or result.summary_path,
    )
    return {
        "hour": hour,
        "checks": len(result.rules),
        "warnings": [w.rule for w in result.warnings],
        "results": result.summary_path,
    }


def silver_published(report: dict) -> dict:
    """What a Silver report says was published: rows in, rows out, quarantined, duplicates, paired positions.

    ``rows_in = rows_out + already_in_silver + quarantined + duplicates + positions_paired``.
    """
    counters = report.get("counters", {})
    quarantined = {
        k.removeprefix("quarantined_"): int(v) for k, v in counters.items() if k.startswith("quarantined_") and v
    }
    return {
        "hour": report["hour"],
        "bronze_complete": report.get("complete"),
        "bronze_files": report.get("files"),
        "rows_in": int(counters.get("bronze_rows", 0)),
        "rows_out": int(counters.get("inserted", 0)),
        "already_in_silver": int(counters.get("already_in_silver", 0)),
        "duplicates": int(counters.get("duplicates", 0)),
        "positions_paired": int(counters.get("positions_paired", 0)),
        "quarantined": sum(quarantined.values()),
        "quarantined_by_reason": quarantined,
        "gate_warnings": int(counters.get("gate_warnings", 0)),
        "summary": report.get("summary"),
    }


def publish_silver(bronze_gate: dict) -> dict:
    """The Silver job for the hour (its gate runs before its commit); returns what it published."""
    config = job_config()
    report = run_job("silver", {"hour": bronze_gate["hour"], "max-quarantine-rate": config.max_quarantine_rate}, config)
    LOG.info("%s", report["summary"])
    return silver_published(report)


def check_ledger_hour(published: dict) -> dict:
    """The ledger gate after the publish: every record of the hour accounted for (``lake ledger --hour``).

    Raises ``LedgerImbalance`` naming each equation that does not hold; returns the figures' verdicts.
    """
    return ledger_gate(job_config().lake_root, [published["hour"]])


def record_silver_hour(published: dict, run_id: str) -> str:
    path = record(job_config().lake_root, published["hour"], published, run_id)
    LOG.info(
        "recorded %s: %d rows in, %d new in Silver, %d quarantined, %d duplicates",
        path,
        published["rows_in"],
        published["rows_out"],
        published["quarantined"],
        published["duplicates"],
    )
    return path


def late_gold_days(published: dict) -> list:
    """One ``TriggerDagRunOperator`` kwargs per Gold day the hour made stale (``late_data``)."""
    hour = published["hour"]
    days = gold_days_to_recompute(job_config().lake_root, hour_start_ms(hour))
    if days:
        LOG.info(
            "hour %s added Silver rows to earlier or already aggregated day(s) %s: recomputing their Gold",
            hour,
            ", ".join(d.isoformat() for d in days),
        )
    return [
        {
            "trigger_run_id": f"late_data__{d.isoformat()}__from_{hour}",
            "conf": {"date": d.isoformat(), "reason": f"late rows from Bronze hour {hour}"},
        }
        for d in days
    ]
