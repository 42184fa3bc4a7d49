"""Batch jobs' metrics, pushed to a Prometheus Pushgateway (``LAKE_PUSHGATEWAY_URL``) when one ends.

Why a Pushgateway and not node_exporter's textfile collector: the jobs run
wherever Airflow's workers (or Flink, or Dataflow) start them, not on one
host with a node_exporter reading a shared folder; a push over HTTP reaches
Prometheus from any of them, and the Pushgateway keeps the *last* run of
each job, which is exactly what "when did Silver last publish, and did its
gate pass?" asks. Pushed with POST (``pushadd``): a failed run replaces the
outcome and duration but leaves ``lake_batch_last_success_timestamp_seconds``
of the last good run in place. A Pushgateway that is down costs a warning,
never the job.

Grouping key ``{job="lake_batch", job_name="silver"|"gold"|...}``. Series:
- ``lake_batch_last_run_timestamp_seconds``, ``lake_batch_last_success_timestamp_seconds``,
  ``lake_batch_last_failure_timestamp_seconds``
- ``lake_batch_last_run_ok`` (1 or 0), ``lake_batch_last_gate_failed`` (1 when a quality gate refused the batch)
- ``lake_batch_duration_seconds`` (of the last run)
- ``lake_batch_rows{field}``: the report's counts (rows in, out, duplicates, ...)
- ``lake_batch_quarantined_rows{reason}``
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Optional

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from lake_core.errors import QualityGateFailed
from lake_core.settings import env

__all__ = ["push_job_metrics"]

LOG = logging.getLogger(__name__)
QUARANTINED_PREFIX = "quarantined_"


def _registry(job: str, seconds: float, report: Any, error: Optional[BaseException]) -> CollectorRegistry:
    registry = CollectorRegistry()
    now = time.time()

    def gauge(name: str, text: str, value: float) -> None:
        Gauge(name, text, registry=registry).set(value)

    gauge("lake_batch_last_run_timestamp_seconds", "When the job last ended.", now)
    gauge("lake_batch_duration_seconds", "How long its last run took.", seconds)
    gauge("lake_batch_last_run_ok", "1 when the last run published, 0 when it failed.", 0 if error else 1)
    gauge(
        "lake_batch_last_gate_failed",
        "1 when a quality gate refused the last run's batch.",
        1 if isinstance(error, QualityGateFailed) else 0,
    )
    if error is None:
        gauge("lake_batch_last_success_timestamp_seconds", "When the job last published.", now)
    else:
        gauge("lake_batch_last_failure_timestamp_seconds", "When the job last failed.", now)
    if report is not None and dataclasses.is_dataclass(report) and not isinstance(report, type):
        rows = Gauge("lake_batch_rows", "Counts of the last run's report.", ["field"], registry=registry)
        quarantined = Gauge(
            "lake_batch_quarantined_rows", "Rows quarantined by the last run, by reason.", ["reason"], registry=registry
        )
        for name, value in dataclasses.asdict(report).items():
            if isinstance(value, bool) or not isinstance(value, int):
                continue
            rows.labels(name).set(value)
        for name, value in (getattr(report, "counters", None) or {}).items():
            if name.startswith(QUARANTINED_PREFIX):
                quarantined.labels(name[len(QUARANTINED_PREFIX) :]).set(int(value))
    return registry


def push_job_metrics(job: str, seconds: float, report: Any = None, error: Optional[BaseException] = None) -> bool:
    """Push the outcome of one run of ``job``; False when no Pushgateway is set or it could not be reached."""
    url = env("LAKE_PUSHGATEWAY_URL")
    if url is None:
        return False
    try:
        pushadd_to_gateway(
            url,
            job="lake_batch",
            grouping_key={"job_name": job},
            registry=_registry(job, seconds, report, error),
            timeout=5,
        )
    except OSError as exc:  # urllib's errors: the Pushgateway away must never fail a job
        LOG.warning("could not push the %s job's metrics to %s: %s", job, url, exc)
        return False
    return True
