"""The task of ``telemetry_maintenance``: retention, compaction and vacuum (``lake.lifecycle.maintenance``)."""

from __future__ import annotations

import logging

from lake.lifecycle.maintenance import maintain
from lake.orchestration.config import job_config, maintenance_limits
from lake.orchestration.intervals import as_utc

__all__ = ["run_maintenance"]

LOG = logging.getLogger(__name__)


def run_maintenance(data_interval_end) -> dict:
    """Maintain the lake as of the run's data interval end (retention counts from it: a re-run decides the same)."""
    report = maintain(job_config().lake_root, now=as_utc(data_interval_end), progress=LOG.info, **maintenance_limits())
    LOG.info("%s", report.summary())
    return {
        "now": report.now,
        "rows_removed": report.rows_removed,
        "files_vacuumed": report.files_vacuumed,
        "summary": report.summary(),
    }
