"""Daily: a Silver day -> Gold, gated. Scheduling and wiring only (``lake.orchestration.daily``)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

from lake.orchestration import dag_defaults, daily

DOC = """
### Silver -> Gold, every UTC day

Each run aggregates the UTC day of its **data interval**, or the day given
as `conf.date` (how `telemetry_bronze_to_silver` asks for a day whose Silver
received late rows).

1. **wait_for_silver_day** (sensor, *reschedule* mode): until each of the
   day's 24 hours is published to Silver (recorded under
   `{LAKE_ROOT}/_quality/runs/silver/<day>/`) or empty for good (the ingest
   moved past it without data). A day whose hour failed its gate waits and
   times out, naming the hours, rather than aggregating a day with a hole
   (`conf.partial_day: true` aggregates what Silver holds without waiting).
2. **publish_gold**: the Gold Beam job (same runner settings as Silver). Its
   gate runs before its commit; a failure publishes nothing. A day Silver has
   no rows of is skipped.
3. **check_ledger**: the conservation ledger of the day's 24 hours (`lake
   ledger --date`): Gold's `event_count` of each hour is the number of Silver
   rows of the hour, and the Silver and ingest equations still hold. An
   imbalance fails the run naming the equation; rows that reached Silver
   after this run are *late* (a recompute is triggered), not an imbalance.
4. **record_gold_day**: what it published, to XCom, the log and
   `{LAKE_ROOT}/_quality/runs/gold/<day>.json`.

Gold replaces the day's partitions, so a re-run (or a late-data run) is
idempotent; `max_active_runs=1` makes every Gold commit, scheduled or
triggered, take its turn, so an older computation of a day can never land
after a newer one.
"""

with DAG(
    dag_id="telemetry_silver_to_gold",
    description="Silver day -> Gold (Beam), gated by Great Expectations; re-run for days with late data",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dag_defaults.start_date(),
    catchup=True,
    max_active_runs=1,
    default_args=dag_defaults.default_args(),
    params={
        "date": Param(
            None,
            type=["null", "string"],
            description="the UTC day to aggregate (YYYY-MM-DD) instead of the run's data interval",
        ),
        "reason": Param(None, type=["null", "string"], description="why this day is recomputed"),
        "partial_day": Param(
            False,
            type="boolean",
            description="aggregate without waiting for every hour "
            "(a demo; a day you know is over): late rows trigger a re-run anyway",
        ),
    },
    tags=["telemetry", "silver", "gold", "daily"],
    doc_md=DOC,
):

    @task.sensor(mode="reschedule", poke_interval=600, timeout=24 * 3600, exponential_backoff=False)
    def wait_for_silver_day(data_interval_start=None, data_interval_end=None, params=None):
        return daily.silver_day_ready(data_interval_start, data_interval_end, params)

    @task(execution_timeout=dt.timedelta(hours=2))
    def publish_gold(silver_day: dict):
        return daily.publish_gold(silver_day)

    @task(execution_timeout=dt.timedelta(minutes=15))
    def check_ledger(published: dict):
        return daily.check_ledger_day(published)

    @task(execution_timeout=dt.timedelta(minutes=5))
    def record_gold_day(published: dict, run_id=None):
        return daily.record_gold_day(published, run_id)

    @task(execution_timeout=dt.timedelta(minutes=15))
    def copy_alerts(published: dict):
        return daily.copy_alerts(published)

    published = publish_gold(wait_for_silver_day())
    check_ledger(published) >> record_gold_day(published)
    copy_alerts(published)
