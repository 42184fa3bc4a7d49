"""The DAGs end to end: ``airflow dags test`` on a lake built here (``dag_lake``).

Real Airflow (its SQLite database, the task runner, sensors, XCom, the
trigger of another DAG), real Beam on the local runner through Airflow's
Beam provider, real Delta tables, real Great Expectations gates. One lake
for the module; each ``dags test`` costs 10-30 s, so each is run once, by a
module fixture, and its outcome checked by tests. The main story (an hour,
its day, a late hour, the day again, maintenance) shares one Airflow
database; runs that do not depend on it (an empty hour, a failing gate, a
backfill) use databases of their own and run beside it, two at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from lake.local.airflow.env import airflow_env, airflow_executable
from lake.local.airflow.runs import dags_test
from lake.orchestration.run_log import read_record
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from support import dag_lake
from support.airflow_homes import fresh_airflow_home

pytestmark = pytest.mark.airflow

HOURLY, DAILY, MAINTENANCE = "telemetry_bronze_to_silver", "telemetry_silver_to_gold", "telemetry_maintenance"
RUN_TIMEOUT_S = 600  # a gate failure must fail at once: retried, it would take minutes


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dags-run") / "lake")
    dag_lake.build(root)
    # home: the main story's Airflow database; side: the independent runs'.
    return SimpleNamespace(
        root=root,
        home=fresh_airflow_home(tmp_path_factory),
        side=fresh_airflow_home(tmp_path_factory),
        gate=fresh_airflow_home(tmp_path_factory),
    )


def run(lake, dag_id, when, home=None, **kw):
    result = dags_test(dag_id, when, lake.root, home=home or lake.home, timeout=RUN_TIMEOUT_S, **kw)
    assert result.state in ("success", "failed"), result.output[-5000:]
    return result


def together(*calls):
    """Run the callables at once (each starts its own processes); return their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


def task_states(lake, dag_id: str, run_id: str, home=None) -> dict:
    with sqlite3.connect(f"{home or lake.home}/airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchall()
    return {task if index < 0 else f"{task}[{index}]": state for task, index, state in rows}


def dag_runs(lake, dag_id: str) -> dict:
    with sqlite3.connect(f"{lake.home}/airflow.db") as db:
        rows = db.execute(
            "SELECT run_id, state, logical_date, conf FROM dag_run WHERE dag_id = ?", (dag_id,)
        ).fetchall()
    return {run_id: (state, logical, conf) for run_id, state, logical, conf in rows}


def silver_rows_by_day(root: str) -> dict:
    table = delta_dataset(LakePaths(root).table("silver_telemetry")).to_table(columns=["event_date"])
    counts = table.group_by("event_date").aggregate([("event_date", "count")])
    return dict(zip(counts["event_date"].to_pylist(), counts["event_date_count"].to_pylist()))


def gold_day(root: str, day: dt.date) -> dict:
    table = delta_dataset(LakePaths(root).table("gold_vehicle_hourly")).to_table()
    table = table.filter(pc.equal(table["event_date"], day))
    return {(r["vehicle_id"], r["hour_start"].hour): r["event_count"] for r in table.to_pylist()}


def versions(root: str) -> tuple:
    paths = LakePaths(root)
    return tuple(DeltaTable(paths.table(t)).version() for t in ("silver_telemetry", "silver_quarantine"))


# -- The runs, each once --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_runs(lake):
    return together(
        # Logical date 09:00 in `dags test` is the interval 08:00-09:00: the good hour.
        # A Variable set through the environment reaches the job as a Beam option (--shards=2).
        lambda: run(lake, HOURLY, "2026-03-01T09:00:00Z", env={"AIRFLOW_VAR_LAKE_BEAM_OPTIONS": '{"shards": 2}'}),
        lambda: run(lake, HOURLY, "2026-03-01T03:00:00Z", home=lake.side),  # hour 02: no data
    )


@pytest.fixture(scope="module")
def good_hour(first_runs):
    return first_runs[0]


@pytest.fixture(scope="module")
def second_runs(lake, good_hour):
    return together(
        lambda: run(lake, DAILY, "2026-03-02"),  # the day 2026-03-01: its 23 other hours are empty for good
        # Bronze hour 2026-03-03T05: 4 of its 10 rows at latitude 95. Silver exists now, and nothing else writes it.
        lambda: (versions(lake.root), run(lake, HOURLY, "2026-03-03T06:00:00Z", home=lake.gate), versions(lake.root)),
    )


@pytest.fixture(scope="module")
def gold_of_the_day(second_runs):
    return second_runs[0]


@pytest.fixture(scope="module")
def late_hour(lake, gold_of_the_day):
    return run(lake, HOURLY, "2026-03-02T01:00:00Z")  # Bronze hour 2026-03-02T00, with late rows of 2026-03-01


# -- Hourly ----------------------------------------------------------------------------------------------------
def test_hourly_run_publishes_its_hour_to_silver(lake, good_hour):
    assert good_hour.state == "success", good_hour.output[-5000:]
    assert silver_rows_by_day(lake.root) == {dag_lake.DAY: dag_lake.GOOD_ROWS}
    published = read_record(lake.root, "silver", dag_lake.GOOD_HOUR)["published"]
    assert {k: published[k] for k in ("rows_in", "rows_out", "quarantined", "duplicates")} == {
        "rows_in": dag_lake.GOOD_ROWS,
        "rows_out": dag_lake.GOOD_ROWS,
        "quarantined": 0,
        "duplicates": 0,
    }
    states = task_states(lake, HOURLY, good_hour.run_id)
    assert states == {
        "wait_for_bronze_hour": "success",
        "validate_bronze": "success",
        "publish_silver": "success",
        "check_ledger": "success",
        "record_silver_hour": "success",
        "late_gold_days": "success",
        "recompute_gold": "skipped",
    }
    assert "ledger of 2026-03-01T08..2026-03-01T08 balances" in good_hour.output
    # The job ran through Airflow's Beam provider, on the local runner, with the Variable's options.
    assert (
        "-m beam_pipelines.silver.pipeline --runner=FnApiRunner --shards=2 --hour=2026-03-01T08 "
        "--max-quarantine-rate=0.1 --report-json="
    ) in good_hour.output
    assert f"silver {dag_lake.GOOD_HOUR}: 36 bronze rows" in good_hour.output  # the report, in the task log


def test_an_hour_without_data_is_skipped_not_failed(lake, first_runs):
    result = first_runs[1]
    assert result.state == "success", result.output[-5000:]
    assert "Bronze hour 2026-03-01T02 holds no rows and the ingest has moved past it" in result.output
    assert task_states(lake, HOURLY, result.run_id, home=lake.side) == {
        "wait_for_bronze_hour": "success",
        "validate_bronze": "skipped",
        "publish_silver": "skipped",
        "record_silver_hour": "skipped",
        "check_ledger": "skipped",
        "late_gold_days": "skipped",
        "recompute_gold": "skipped",
    }
    assert "beam_pipelines.silver.pipeline" not in result.output  # no job started
    assert read_record(lake.root, "silver", "2026-03-01T02") is None


def test_a_failing_gate_fails_the_run_and_leaves_silver_untouched(lake, second_runs):
    before, result, after = second_runs[1]
    assert result.state == "failed"
    assert (
        "QualityGateFailed: silver batch 2026-03-03T05 failed its quality gate (nothing was published): "
        "silver_quarantine_rate (expect_column_values_to_be_null on reason: 4 of 10 rows (40.0%)"
    ) in result.output
    assert "Retry policy decision" in result.output and "action=fail" in result.output  # not retried
    assert after == before
    assert task_states(lake, HOURLY, result.run_id, home=lake.gate) == {
        "wait_for_bronze_hour": "success",
        "validate_bronze": "success",
        "publish_silver": "failed",
        "check_ledger": "upstream_failed",
        "record_silver_hour": "upstream_failed",
        "late_gold_days": "upstream_failed",
        "recompute_gold": "upstream_failed",
    }
    assert read_record(lake.root, "silver", dag_lake.BAD_HOUR) is None  # so its day will wait, not aggregate a hole


# -- Daily ----------------------------------------------------------------------------------------------------
def test_daily_run_aggregates_the_settled_day(lake, gold_of_the_day):
    assert gold_of_the_day.state == "success", gold_of_the_day.output[-5000:]
    assert "Silver day 2026-03-01: all 24 hours are published or empty" in gold_of_the_day.output
    assert gold_day(lake.root, dag_lake.DAY) == {("D1", 8): 12, ("D2", 8): 12, ("D3", 8): 12}
    published = read_record(lake.root, "gold", "2026-03-01")["published"]
    assert (published["rows_in"], published["vehicle_hours"], published["vehicles"]) == (36, 3, 3)


@pytest.fixture(scope="module")
def broken_ledger(lake, gold_of_the_day, tmp_path_factory):
    """The daily DAG on a copy of the lake whose Bronze hour lost a row after Silver published it."""
    root = shutil.copytree(lake.root, str(tmp_path_factory.mktemp("dags-ledger") / "lake"))
    directory = LakePaths(root).bronze_hour(int(dt.datetime(2026, 3, 1, 8, tzinfo=dt.timezone.utc).timestamp() * 1000))
    name = sorted(n for n in os.listdir(directory) if n.endswith(".parquet"))[0]
    table = pq.read_table(f"{directory}/{name}")
    pq.write_table(table.slice(1), f"{directory}/{name}")
    home = fresh_airflow_home(tmp_path_factory)
    result = dags_test(DAILY, "2026-03-02", root, home=home, timeout=RUN_TIMEOUT_S)
    return SimpleNamespace(root=root, home=home, result=result)


def test_an_imbalance_in_the_ledger_fails_the_daily_run_naming_the_equation(lake, broken_ledger):
    result = broken_ledger.result
    assert result.state == "failed", result.output[-5000:]
    assert "LedgerImbalance: the ledger does not balance: ingest: offsets_consumed = bronze_rows" in result.output
    assert "hour 2026-03-01T08" in result.output
    assert "Retry policy decision" in result.output and "action=fail" in result.output  # not retried
    states = task_states(lake, DAILY, result.run_id, home=broken_ledger.home)
    assert {t: states[t] for t in ("wait_for_silver_day", "publish_gold", "check_ledger", "record_gold_day")} == {
        "wait_for_silver_day": "success",
        "publish_gold": "success",
        "check_ledger": "failed",
        "record_gold_day": "upstream_failed",
    }


# -- Late data ------------------------------------------------------------------------------------------------
def test_late_rows_trigger_a_gold_run_for_their_day(lake, late_hour):
    assert late_hour.state == "success", late_hour.output[-5000:]
    assert silver_rows_by_day(lake.root) == {
        dag_lake.DAY: dag_lake.GOOD_ROWS + dag_lake.LATE_ROWS,
        dt.date(2026, 3, 2): 6,
    }
    assert task_states(lake, HOURLY, late_hour.run_id)["recompute_gold[0]"] == "success"
    triggered = dag_runs(lake, DAILY)["late_data__2026-03-01__from_2026-03-02T00"]
    state, logical_date, conf = triggered
    assert (state, logical_date) == ("queued", None)  # the scheduler will run it, after any Gold run in flight
    assert json.loads(conf) == {"date": "2026-03-01", "reason": "late rows from Bronze hour 2026-03-02T00"}


def scheduled_style_run(lake) -> tuple:
    """A backfill creates runs as the scheduler does (logical date 08:00 covers 08:00-09:00); run its sensor."""
    env = airflow_env(lake.root, home=lake.side)

    def airflow(*args):
        out = subprocess.run([airflow_executable(), *args], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
        return out.stdout + out.stderr

    airflow(
        "backfill",
        "create",
        "--dag-id",
        HOURLY,
        "--from-date",
        "2026-03-01T08:00:00+00:00",
        "--to-date",
        "2026-03-01T08:00:00+00:00",
        "--reprocess-behavior",
        "completed",
    )
    with sqlite3.connect(f"{lake.side}/airflow.db") as db:
        run_id, start, end = db.execute(
            "SELECT run_id, data_interval_start, data_interval_end FROM dag_run WHERE dag_id = ? AND run_type = ?",
            (HOURLY, "backfill"),
        ).fetchone()
    return start, end, airflow("tasks", "test", HOURLY, "wait_for_bronze_hour", run_id)


@pytest.fixture(scope="module")
def last_runs(lake, late_hour, first_runs):
    conf = json.loads(dag_runs(lake, DAILY)["late_data__2026-03-01__from_2026-03-02T00"][2])
    stale = gold_day(lake.root, dag_lake.DAY)
    # What the queued run does, run here: its conf names the day, whatever its data interval.
    recomputed, scheduled = together(
        lambda: run(lake, DAILY, "2026-03-10", conf=conf), lambda: scheduled_style_run(lake)
    )
    return SimpleNamespace(stale=stale, recomputed=recomputed, scheduled=scheduled)


def test_the_triggered_gold_run_recomputes_the_day(lake, last_runs):
    assert last_runs.stale == {("D1", 8): 12, ("D2", 8): 12, ("D3", 8): 12}
    assert last_runs.recomputed.state == "success", last_runs.recomputed.output[-5000:]
    assert gold_day(lake.root, dag_lake.DAY) == {("D1", 8): 12, ("D2", 8): 12, ("D3", 8): 12, ("D1", 23): 12}
    assert gold_day(lake.root, dt.date(2026, 3, 9)) == {}


# -- Scheduled intervals and backfills --------------------------------------------------------------------------
def test_a_scheduled_run_processes_the_hour_its_interval_starts(last_runs):
    start, end, out = last_runs.scheduled
    assert (start[:19], end[:19]) == ("2026-03-01 08:00:00", "2026-03-01 09:00:00")
    assert f"Bronze hour {dag_lake.GOOD_HOUR}: ready" in out  # the hour the manual run at 09:00 processed, too


# -- Maintenance ----------------------------------------------------------------------------------------------
def test_maintenance_runs_as_of_its_data_interval(lake, last_runs):
    result = run(lake, MAINTENANCE, "2026-03-04")
    assert result.state == "success", result.output[-5000:]
    # Manual run at 2026-03-04T00:00 of a 03:30 schedule: the interval that ended at 2026-03-03T03:30.
    assert "maintenance of" in result.output and "as of 2026-03-03T03:30:00Z" in result.output
    assert silver_rows_by_day(lake.root)[dag_lake.DAY] == dag_lake.GOOD_ROWS + dag_lake.LATE_ROWS  # nothing expired
