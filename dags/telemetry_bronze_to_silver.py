"""Hourly: the closed Bronze hour -> Silver, gated. Scheduling and wiring only (``lake.orchestration.hourly``)."""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, task

from lake.orchestration import dag_defaults, hourly

DOC = """
### Bronze -> Silver, every UTC hour

Each run processes the Bronze hour of its **data interval** (a scheduled run
with logical date 08:00 processes 08:00-09:00; a manual run or `airflow dags
test` at 09:00 processes the hour that ended then).

1. **wait_for_bronze_hour** (sensor, *reschedule* mode: no worker slot held
   while waiting): until the ingest wrote the hour's `_COMPLETE`, or closed a
   later hour. An hour without data gets no marker; once the ingest has moved
   past it the run **skips** (nothing to publish) instead of waiting forever.
2. **validate_bronze**: the Bronze gate (Great Expectations) on the hour as stored.
3. **publish_silver**: the Silver Beam job through Airflow's Beam provider
   (`BeamHook`; runner from the Variable `lake_beam_runner`, options from
   `lake_beam_options`). Its gate runs on the batch *before* its commit: a
   failed gate publishes nothing and fails this task with the failed
   expectations (`QualityGateFailed`, not retried). Waits for the previous
   hour's publish (`depends_on_past`): Silver keeps the first-ingested copy of
   an event whatever the order, but in order no copy has to be replaced.
4. **check_ledger**: the conservation ledger of the hour (`lake ledger --hour`):
   every Kafka offset is a Bronze row, a reject or a recorded gap, and every
   Bronze row a new Silver row, quarantined, a duplicate or a paired position.
   An imbalance fails the run naming the equation (`LedgerImbalance`), so the
   hour is not recorded and the daily DAG does not aggregate it.
5. **record_silver_hour**: rows in, rows out, quarantined, duplicates, to XCom,
   the log and `{LAKE_ROOT}/_quality/runs/silver/<day>/<hour>.json` (which the
   daily DAG reads).
6. **late_gold_days** / **recompute_gold**: the hour's rows that belong to an
   earlier day (or to a day whose Gold exists) trigger a run of
   `telemetry_silver_to_gold` for that day (`conf.date`).

There is no separate Silver gate task after the commit: the job's gate runs
on exactly the batch being published, before anything is written, which is
the only place a gate can keep bad rows out; a gate after the commit could
only re-read the day (hour after hour) and report what is already public.

Configuration: Airflow Variables `lake_root` (else env `LAKE_ROOT`),
`lake_beam_runner`, `lake_beam_options`, `lake_silver_max_quarantine_rate`.
One run at a time (`max_active_runs=1`), catch-up from `LAKE_DAGS_START_DATE`.
"""

with DAG(
    dag_id="telemetry_bronze_to_silver",
    description="Bronze hour -> Silver (Beam), gated by Great Expectations",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=dag_defaults.start_date(),
    catchup=True,
    max_active_runs=1,
    default_args=dag_defaults.default_args(),
    tags=["telemetry", "bronze", "silver", "hourly"],
    doc_md=DOC,
):

    @task.sensor(mode="reschedule", poke_interval=120, timeout=12 * 3600, exponential_backoff=False)
    def wait_for_bronze_hour(data_interval_start=None, data_interval_end=None):
        return hourly.bronze_hour_ready(data_interval_start, data_interval_end)

    @task(execution_timeout=dt.timedelta(minutes=30))
    def validate_bronze(bronze: dict):
        return hourly.validate_bronze(bronze)

    @task(execution_timeout=dt.timedelta(hours=1), depends_on_past=True)
    def publish_silver(bronze_gate: dict):
        return hourly.publish_silver(bronze_gate)

    @task(execution_timeout=dt.timedelta(minutes=15))
    def check_ledger(published: dict):
        return hourly.check_ledger_hour(published)

    @task(execution_timeout=dt.timedelta(minutes=5))
    def record_silver_hour(published: dict, run_id=None):
        return hourly.record_silver_hour(published, run_id)

    @task(execution_timeout=dt.timedelta(minutes=15))
    def late_gold_days(published: dict):
        return hourly.late_gold_days(published)

    published = publish_silver(validate_bronze(wait_for_bronze_hour()))
    stale_days = late_gold_days(published)
    check_ledger(published) >> record_silver_hour(published) >> stale_days
    TriggerDagRunOperator.partial(
        task_id="recompute_gold",
        trigger_dag_id=hourly.GOLD_DAG_ID,
        logical_date=None,
        skip_when_already_exists=True,
        execution_timeout=dt.timedelta(minutes=5),
    ).expand_kwargs(stale_days)
