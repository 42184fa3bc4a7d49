"""The DAG files: they import with no error, and declare the graphs, schedules and policies we mean.

The DAGs are loaded by Airflow's own ``DagBag`` in a subprocess (so this
test process never imports Airflow with someone else's configuration), with
no lake root and a database that was never migrated: parsing a DAG file must
need neither. Then ``airflow dags list --local`` and ``list-import-errors
--local`` once, as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from lake.local.airflow.env import DAG_IDS, DAGS_FOLDER, airflow_env, airflow_executable
from support.airflow_homes import fresh_airflow_home

DESCRIBE = r"""
import json, os, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.base import TimeRestriction

bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag in bag.dags.values():
    timetable = coerce_to_core_timetable(dag.timetable)
    first = timetable.next_dagrun_info(last_automated_data_interval=None,
                                       restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True))
    manual = timetable.infer_manual_data_interval(run_after=pendulum.parse(sys.argv[1]))
    DagSerialization.to_dict(dag)  # what the dag-processor stores: must not raise
    out["dags"][dag.dag_id] = {
        "timetable": type(dag.timetable).__name__, "summary": timetable.summary,
        "catchup": dag.catchup, "max_active_runs": dag.max_active_runs, "tags": sorted(dag.tags),
        "doc_md": dag.doc_md or "", "start_date": dag.start_date.isoformat(), "params": sorted(dag.params),
        "first_scheduled": [first.data_interval.start.isoformat(), first.data_interval.end.isoformat()],
        "manual": [manual.start.isoformat(), manual.end.isoformat()],
        "tasks": {t.task_id: {
            "operator": type(t).__name__, "upstream": sorted(t.upstream_task_ids), "owner": t.owner,
            "retries": t.retries, "retry_delay": t.retry_delay.total_seconds(),
            "backoff": t.retry_exponential_backoff, "max_retry_delay": t.max_retry_delay.total_seconds(),
            "retry_policy": t.retry_policy.serialize() if t.retry_policy else None,
            "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
            "sensor_mode": getattr(t, "mode", None), "sensor_timeout": getattr(t, "timeout", None),
            "depends_on_past": t.depends_on_past,
        } for t in dag.tasks},
    }
print("DESCRIPTION" + json.dumps(out))
"""
WHEN = "2026-03-01T09:00:00+00:00"
START = "2026-02-27"  # LAKE_DAGS_START_DATE (the default is 2026-03-01)


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-unmigrated")
    env = airflow_env(str(home / "lake"), home=str(home), base={**os.environ, "LAKE_DAGS_START_DATE": START})
    env.pop("LAKE_ROOT")
    out = subprocess.run([sys.executable, "-c", DESCRIBE, WHEN], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("DESCRIPTION", 1)[1])


def test_every_dag_imports_without_errors(described):
    assert described["import_errors"] == {}
    assert sorted(described["dags"]) == sorted(DAG_IDS)


def test_hourly_graph(described):
    tasks = described["dags"]["telemetry_bronze_to_silver"]["tasks"]
    assert {k: v["upstream"] for k, v in tasks.items()} == {
        "wait_for_bronze_hour": [],
        "validate_bronze": ["wait_for_bronze_hour"],
        "publish_silver": ["validate_bronze"],
        "check_ledger": ["publish_silver"],
        "record_silver_hour": ["check_ledger", "publish_silver"],
        "late_gold_days": ["publish_silver", "record_silver_hour"],
        "recompute_gold": ["late_gold_days"],
    }
    assert tasks["recompute_gold"]["operator"] == "MappedOperator"  # one triggered Gold run per stale day
    # The sensor gives its worker slot back between pokes, and gives up after 12 hours.
    assert tasks["wait_for_bronze_hour"]["sensor_mode"] == "reschedule"
    assert tasks["wait_for_bronze_hour"]["sensor_timeout"] == 12 * 3600
    # Silver keeps the first-ingested copy only if hours are published in order.
    assert tasks["publish_silver"]["depends_on_past"] is True
    assert tasks["publish_silver"]["timeout"] == 3600


def test_daily_graph(described):
    dag = described["dags"]["telemetry_silver_to_gold"]
    assert {k: v["upstream"] for k, v in dag["tasks"].items()} == {
        "wait_for_silver_day": [],
        "publish_gold": ["wait_for_silver_day"],
        "check_ledger": ["publish_gold"],
        "record_gold_day": ["check_ledger", "publish_gold"],
        "copy_alerts": ["publish_gold"],
    }
    assert dag["tasks"]["wait_for_silver_day"]["sensor_mode"] == "reschedule"
    assert dag["params"] == ["date", "partial_day", "reason"]


def test_maintenance_graph(described):
    dag = described["dags"]["telemetry_maintenance"]
    assert list(dag["tasks"]) == ["maintain"]
    assert dag["catchup"] is False  # only the latest maintenance matters


@pytest.mark.parametrize(
    "dag_id, interval, catchup, first_start",
    [
        ("telemetry_bronze_to_silver", timedelta(hours=1), True, datetime(2026, 2, 27, tzinfo=timezone.utc)),
        ("telemetry_silver_to_gold", timedelta(days=1), True, datetime(2026, 2, 27, tzinfo=timezone.utc)),
        ("telemetry_maintenance", timedelta(days=1), False, datetime(2026, 2, 27, 3, 30, tzinfo=timezone.utc)),
    ],
)
def test_schedules_have_real_data_intervals(described, dag_id, interval, catchup, first_start):
    dag = described["dags"][dag_id]
    assert dag["timetable"] == "CronDataIntervalTimetable"
    assert dag["catchup"] is catchup
    assert dag["max_active_runs"] == 1  # one writer per table at a time
    start, end = (datetime.fromisoformat(t) for t in dag["first_scheduled"])
    assert end - start == interval and start.tzinfo is not None and start.utcoffset() == timedelta(0)
    # Scheduled runs cover [X, X + interval); manual runs and `dags test` the interval that ended at X.
    manual_start, manual_end = (datetime.fromisoformat(t) for t in dag["manual"])
    assert manual_end - manual_start == interval
    if dag_id == "telemetry_bronze_to_silver":
        assert (manual_start, manual_end) == (
            datetime(2026, 3, 1, 8, tzinfo=timezone.utc),
            datetime(2026, 3, 1, 9, tzinfo=timezone.utc),
        )
    assert start == first_start  # from LAKE_DAGS_START_DATE


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_owners_retries_timeouts_tags_docs(described, dag_id):
    dag = described["dags"][dag_id]
    assert "telemetry" in dag["tags"] and len(dag["tags"]) >= 2
    assert dag["doc_md"].count("\n") >= 8 and "**" in dag["doc_md"]  # real docs, in Markdown
    for task_id, task in dag["tasks"].items():
        assert task["owner"] == "telemetry-lake", task_id
        assert (task["retries"], task["retry_delay"], task["backoff"], task["max_retry_delay"]) == (3, 120, 2.0, 1800)
        assert task["timeout"] is not None or task["sensor_mode"] == "reschedule", task_id
        rules = task["retry_policy"]["rules"]
        assert rules[0]["action"] == "fail" and set(rules[0]["exception"]) == {
            "lake_core.errors.QualityGateFailed",
            "lake_core.errors.LakeDataError",
            "lake_core.errors.ConfigError",
            "lake_core.errors.LedgerImbalance",
        }


@pytest.mark.airflow
def test_airflow_cli_lists_the_dags_and_no_import_errors(tmp_path_factory):
    home = fresh_airflow_home(tmp_path_factory)
    env = airflow_env(os.path.join(home, "lake"), home=home)

    def cli(*args):
        out = subprocess.run(
            [airflow_executable(), *args, "--local", "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        # Airflow prints its warnings to stdout too: the JSON is the line that is a JSON array.
        return json.loads(
            next(line for line in reversed(out.stdout.splitlines()) if line.startswith("[{") or line.strip() == "[]")
        )

    listed = {d["dag_id"]: d for d in cli("dags", "list")}
    assert sorted(listed) == sorted(DAG_IDS)
    assert all(d["fileloc"].startswith(DAGS_FOLDER) for d in listed.values())
    assert cli("dags", "list-import-errors") == []
