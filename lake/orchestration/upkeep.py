"""The task of ``telemetry_maintenance``: retention, compaction and vacuum (``lake.maintenance``)."""
from __future__ import annotations

import logging

from .config import job_config, maintenance_limits
from .intervals import as_utc

__all__ = ["run_maintenance"]

LOG = logging.getLogger(__name__)


def run_maintenance(data_interval_end) -> dict:
    """Maintain the lake as of the run's data interval end (retention counts from it: a re-run decides the same)."""
    from lake.maintenance import maintain

    report = maintain(job_config().lake_root, now=as_utc(data_interval_end), progress=LOG.info, **maintenance_limits())
    LOG.info("%s", report.summary())
    return {"now": report.now, "rows_removed": report.rows_removed, "files_vacuumed": report.files_vacuumed,
            "summary": report.summary()}
