"""Daily: retention, compaction and vacuum of every table.

Scheduling and wiring only; the work is ``lake.lifecycle.maintenance``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, task

from lake.orchestration import dag_defaults, maintenance

DOC = """
### Lake maintenance, every day at 03:30 UTC

**maintain** runs `lake.lifecycle.maintenance.maintain(lake_root, now=data_interval_end)`:
Bronze hours past their retention are deleted (never those the ingest's
checkpoint still needs), Delta partitions past theirs are deleted, small
files are compacted, unreferenced files vacuumed, logs checkpointed. Each
step that has nothing to do commits nothing, so a re-run changes nothing.

Retention counts from the run's data interval end, not the clock.
No catch-up: only the latest maintenance matters. 03:30 keeps it clear of
the daily Gold run at midnight. Limits: Variables `lake_bronze_retention_days`,
`lake_silver_retention_days`, `lake_gold_retention_days`,
`lake_vacuum_retention_hours` (defaults 90, 730, 1825 days, 168 hours).
"""

with DAG(
    dag_id="telemetry_maintenance",
    description="Retention, compaction and vacuum of the lake's tables",
    schedule=CronDataIntervalTimetable("30 3 * * *", timezone="UTC"),
    start_date=dag_defaults.start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=dag_defaults.default_args(),
    tags=["telemetry", "maintenance", "daily"],
    doc_md=DOC,
):

    @task(execution_timeout=dt.timedelta(hours=3))
    def maintain(data_interval_end=None):
        return maintenance.run_maintenance(data_interval_end)

    maintain()
