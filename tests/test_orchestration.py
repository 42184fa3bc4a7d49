"""What the DAGs' tasks decide, on real lakes and without Airflow running: ``lake.orchestration``.

Hour readiness, the hour or day of a data interval, settings, the run log,
which Gold days late rows make stale, and the jobs' JSON reports. The DAGs
themselves run in ``test_dags_run.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil

import pytest

from lake.orchestration import config, dag_defaults
from lake.orchestration.daily import day_hours_pending, silver_day_has_files
from lake.orchestration.intervals import hour_start_ms, interval_day, interval_hour
from lake.orchestration.late_data import gold_days_to_recompute, silver_days_from_hour
from lake.orchestration.run_log import read_record, record_silver_hour, silver_hours_recorded
from lake_core.bronze.readiness import HourState, bronze_hour_state, later_hour_complete
from lake_core.errors import ConfigError, LakeDataError, LakeError, QualityGateFailed
from lake_schemas import LakePaths
from support import dag_lake
from support.bronze_builder import BronzeBuilder, ms

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("orchestration") / "lake")
    dag_lake.build(root)
    return root


@pytest.fixture
def lake(built, tmp_path):
    root = str(tmp_path / "lake")
    shutil.copytree(built, root)
    return root


# -- Bronze hours ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hour, state",
    [
        (dag_lake.GOOD_HOUR, HourState.READY),
        ("2026-03-01T02", HourState.EMPTY),  # no data before the first hour: the ingest has moved past it
        ("2026-03-01T23", HourState.EMPTY),
        ("2026-03-02T07", HourState.EMPTY),  # across a day boundary
        (dag_lake.BAD_HOUR, HourState.READY),
        ("2026-03-03T06", HourState.WAITING),  # after the last complete hour: more may still come
        ("2027-01-01T00", HourState.WAITING),
    ],
)
def test_bronze_hour_state(built, hour, state):
    assert bronze_hour_state(built, hour_start_ms(hour)) is state


def test_an_open_hour_waits_until_it_or_a_later_hour_is_complete(lake):
    b = BronzeBuilder(lake)
    t = ms("2026-03-04T10:00:00")
    b.snapshot("D1", "open-1", t, t, location={"lat": 52.0, "lon": 13.0})
    b.write(complete=False)
    assert bronze_hour_state(lake, hour_start_ms("2026-03-04T10")) is HourState.WAITING
    # An open hour is not a "later complete" one.
    assert bronze_hour_state(lake, hour_start_ms("2026-03-04T09")) is HourState.WAITING
    os.makedirs(LakePaths(lake).bronze_hour(hour_start_ms("2026-03-05T00")))
    open(LakePaths(lake).complete_marker(hour_start_ms("2026-03-05T00")), "w").write("{}")  # closed with rejects only
    assert bronze_hour_state(lake, hour_start_ms("2026-03-05T00")) is HourState.EMPTY
    assert bronze_hour_state(lake, hour_start_ms("2026-03-04T10")) is HourState.READY  # files, and the ingest moved on
    assert bronze_hour_state(lake, hour_start_ms("2026-03-04T09")) is HourState.EMPTY


def test_later_hour_complete_crosses_years_and_ignores_the_hour_itself(lake):
    assert later_hour_complete(lake, hour_start_ms("2025-12-31T23"))
    assert not later_hour_complete(lake, hour_start_ms(dag_lake.BAD_HOUR))
    assert later_hour_complete(lake, hour_start_ms("2026-03-03T04"))


def test_no_bronze_at_all_waits(tmp_path):
    assert bronze_hour_state(str(tmp_path), hour_start_ms("2026-03-01T08")) is HourState.WAITING


# -- Data intervals --------------------------------------------------------------------------------------------
def test_interval_hour_is_the_interval_start():
    # A scheduled run at logical date 08:00 covers 08:00-09:00; `dags test` at 09:00 covers the same hour.
    assert interval_hour(at("2026-03-01T08:00:00"), at("2026-03-01T09:00:00")) == "2026-03-01T08"
    offset = dt.timezone(dt.timedelta(hours=2))
    assert (
        interval_hour(dt.datetime(2026, 3, 1, 10, tzinfo=offset), dt.datetime(2026, 3, 1, 11, tzinfo=offset))
        == "2026-03-01T08"
    )


@pytest.mark.parametrize(
    "start, end",
    [
        (at("2026-03-01T08:00:00"), at("2026-03-01T10:00:00")),
        (at("2026-03-01T08:30:00"), at("2026-03-01T09:30:00")),
        (dt.datetime(2026, 3, 1, 8), dt.datetime(2026, 3, 1, 9)),
        (None, None),
    ],
)
def test_interval_hour_refuses_anything_but_one_utc_hour(start, end):
    with pytest.raises(ConfigError):
        interval_hour(start, end)


def test_interval_day_from_the_interval_or_conf():
    assert interval_day(at("2026-03-01T00:00:00"), at("2026-03-02T00:00:00")) == dt.date(2026, 3, 1)
    assert interval_day(None, None, {"date": "2026-02-20"}) == dt.date(2026, 2, 20)  # a run without logical date
    assert interval_day(at("2026-03-01T00:00:00"), at("2026-03-02T00:00:00"), {"date": None}) == dt.date(2026, 3, 1)
    with pytest.raises(ConfigError, match="conf date"):
        interval_day(None, None, {"date": "yesterday"})
    with pytest.raises(ConfigError, match="one whole UTC day"):
        interval_day(at("2026-03-01T06:00:00"), at("2026-03-02T06:00:00"))


# -- Settings --------------------------------------------------------------------------------------------------
def test_job_config_variables_win_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKE_ROOT", "/from/env")
    monkeypatch.setenv("LAKE_BEAM_RUNNER", "FlinkRunner")
    variables = {
        "lake_root": str(tmp_path),
        "lake_beam_options": '{"flink_master": "flink:8081", "shards": 8}',
        "lake_silver_max_quarantine_rate": "0.25",
    }
    got = config.job_config(variables.get)
    assert got == config.JobConfig(str(tmp_path), "FlinkRunner", {"flink_master": "flink:8081", "shards": 8}, 0.25)


def test_job_config_defaults(monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", "relative/lake")
    for name in ("LAKE_BEAM_RUNNER", "LAKE_BEAM_OPTIONS", "LAKE_SILVER_MAX_QUARANTINE_RATE"):
        monkeypatch.delenv(name, raising=False)
    got = config.job_config(lambda name: None)
    assert got == config.JobConfig(os.path.abspath("relative/lake"), "FnApiRunner", {}, 0.1)


@pytest.mark.parametrize(
    "variables, message",
    [
        ({}, "set the Airflow Variable lake_root"),
        ({"lake_root": "/l", "lake_beam_options": "{flink"}, "lake_beam_options is not JSON"),
        ({"lake_root": "/l", "lake_beam_options": "[1]"}, "must be a JSON object"),
        ({"lake_root": "/l", "lake_silver_max_quarantine_rate": "lots"}, "not a number"),
        ({"lake_root": "/l", "lake_silver_max_quarantine_rate": "1.5"}, "between 0 and 1"),
        ({"lake_root": "ftp://x"}, "unsupported lake root"),
    ],
)
def test_job_config_errors_name_the_setting(monkeypatch, variables, message):
    for name in ("LAKE_ROOT", "LAKE_BEAM_OPTIONS", "LAKE_SILVER_MAX_QUARANTINE_RATE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=message):
        config.job_config(variables.get)


def test_maintenance_limits(monkeypatch):
    monkeypatch.setenv("LAKE_GOLD_RETENTION_DAYS", "400")
    assert config.maintenance_limits({"lake_bronze_retention_days": "30"}.get) == {"bronze_days": 30, "gold_days": 400}
    with pytest.raises(ConfigError, match="lake_vacuum_retention_hours"):
        config.maintenance_limits({"lake_vacuum_retention_hours": "a week"}.get)


def test_start_date(monkeypatch):
    monkeypatch.delenv("LAKE_DAGS_START_DATE", raising=False)
    assert dag_defaults.start_date() == at("2026-03-01T00:00:00")
    monkeypatch.setenv("LAKE_DAGS_START_DATE", "2026-13-01")
    with pytest.raises(ConfigError, match="LAKE_DAGS_START_DATE"):
        dag_defaults.start_date()


# -- Run log and the day's hours ----------------------------------------------------------------------------------
def test_a_day_waits_for_its_published_hours_only(lake):
    assert day_hours_pending(lake, dag_lake.DAY) == [dag_lake.GOOD_HOUR]  # the 23 others are empty for good
    path = record_silver_hour(lake, dag_lake.GOOD_HOUR, {"rows_in": 36}, "run-1")
    assert path.endswith("_quality/runs/silver/2026-03-01/2026-03-01T08.json")
    assert silver_hours_recorded(lake, dag_lake.DAY) == {dag_lake.GOOD_HOUR}
    assert day_hours_pending(lake, dag_lake.DAY) == []
    assert read_record(lake, "silver", dag_lake.GOOD_HOUR)["published"] == {"rows_in": 36}
    record_silver_hour(lake, dag_lake.GOOD_HOUR, {"rows_in": 37}, "run-2")  # a re-run replaces the record
    assert read_record(lake, "silver", dag_lake.GOOD_HOUR)["dag_run"] == "run-2"
    # A day after the last complete hour waits for every hour still open.
    assert day_hours_pending(lake, dt.date(2026, 3, 3)) == [f"2026-03-03T{h:02d}" for h in range(5, 24)]


# -- Late data ---------------------------------------------------------------------------------------------------
def test_late_rows_make_earlier_gold_days_stale(lake):
    from beam_pipelines.gold.options import GoldOptions
    from beam_pipelines.gold.pipeline import run_gold
    from beam_pipelines.silver.options import SilverOptions
    from beam_pipelines.silver.pipeline import run_silver

    good, late = hour_start_ms(dag_lake.GOOD_HOUR), hour_start_ms(dag_lake.LATE_HOUR)
    assert gold_days_to_recompute(lake, late) == []  # no Silver yet: nothing was added anywhere
    run_silver(SilverOptions(lake, dag_lake.GOOD_HOUR, gate=False))
    assert silver_day_has_files(lake, dag_lake.DAY) and not silver_day_has_files(lake, dt.date(2026, 3, 2))
    # The day's own hours, before its Gold exists: the daily run is still ahead.
    assert gold_days_to_recompute(lake, good) == []
    run_gold(GoldOptions(lake, dag_lake.DAY.isoformat(), gate=False))
    assert gold_days_to_recompute(lake, good) == [dag_lake.DAY]  # Gold exists now: a re-run would refresh it
    assert gold_days_to_recompute(lake, late) == []  # the late hour is not in Silver yet
    run_silver(SilverOptions(lake, dag_lake.LATE_HOUR, gate=False))
    # D1's rows of 23:58 went to 2026-03-01, D2's to 2026-03-02 (its own day, no Gold: ahead of its daily run).
    assert gold_days_to_recompute(lake, late) == [dag_lake.DAY]
    assert silver_days_from_hour(lake, late, {dag_lake.DAY, dt.date(2026, 3, 2)}) == {dag_lake.DAY, dt.date(2026, 3, 2)}


def test_duplicates_of_rows_already_in_silver_are_not_late_rows(lake):
    from beam_pipelines.silver.options import SilverOptions
    from beam_pipelines.silver.pipeline import run_silver

    run_silver(SilverOptions(lake, dag_lake.GOOD_HOUR, gate=False))
    # Hour 2026-03-01T10 brings only redeliveries of hour 08's events: Silver keeps the first copies.
    b = BronzeBuilder(lake)
    for i in range(3):
        t = ms("08:05:00") + i * 10_000
        b.snapshot("D1", f"D1-{t}", t, ms("10:00:00") + i, partition=7, location={"lat": 52.5, "lon": 13.4})
    b.write()
    report = run_silver(SilverOptions(lake, "2026-03-01T10", gate=False))
    assert (report.bronze_rows, report.inserted) == (3, 0)
    assert silver_days_from_hour(lake, hour_start_ms("2026-03-01T10"), {dag_lake.DAY}) == set()


# -- The jobs' reports ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Report:
    hour: str
    counters: dict

    def summary(self) -> str:
        return f"done {self.hour}"


@dataclasses.dataclass
class _Options:
    report_json: str


def test_a_job_reports_its_outcome_as_json(tmp_path):
    from beam_pipelines.reports import read_report, writes_json_report

    @writes_json_report("silver")
    def job(opts, fail=None):
        if fail:
            raise fail
        return _Report("2026-03-01T08", {"inserted": 3})

    path = str(tmp_path / "r.json")
    assert job(_Options(path)).counters == {"inserted": 3}
    assert read_report(path) == {
        "job": "silver",
        "ok": True,
        "summary": "done 2026-03-01T08",
        "hour": "2026-03-01T08",
        "counters": {"inserted": 3},
    }
    with pytest.raises(QualityGateFailed):
        job(_Options(path), fail=QualityGateFailed("silver batch failed its quality gate: rate"))
    assert json.load(open(path))["exit_code"] == 5
    with pytest.raises(QualityGateFailed, match="^silver batch failed its quality gate: rate$"):
        read_report(path)
    with pytest.raises(LakeError, match="wrote no report.*its last output:\nTraceback"):
        read_report(str(tmp_path / "missing.json"), job_output="Traceback ...")
    with pytest.raises(LakeDataError):  # a ConfigError or LakeDataError comes back as itself
        job(_Options(path), fail=LakeDataError("no Bronze data for hour"))
    with pytest.raises(LakeDataError, match="no Bronze data"):
        read_report(path)


# -- The jobs through Airflow's Beam provider --------------------------------------------------------------------
def test_the_runner_setting_reaches_the_job_and_a_crash_is_reported_with_its_output(built):
    from lake.orchestration.beam_jobs import run_job

    settings = config.JobConfig(built, runner="NoSuchRunner")
    with pytest.raises(LakeError, match=r"(?s)wrote no report.*NoSuchRunner"):
        run_job("silver", {"hour": dag_lake.GOOD_HOUR}, settings)


def test_an_interrupted_task_stops_its_job(tmp_path):
    import subprocess
    import sys
    import time

    import psutil

    from lake.orchestration.beam_jobs import _job_stops_with_the_task

    started = tmp_path / "started"
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # e.g. a broker
    with pytest.raises(KeyboardInterrupt):
        with _job_stops_with_the_task():
            job = subprocess.Popen(
                [sys.executable, "-c", f"open({str(started)!r}, 'w').close(); import time; time.sleep(600)"]
            )
            while not started.exists():
                time.sleep(0.05)
            raise KeyboardInterrupt  # what a task timeout or kill raises in the task's process
    # Stopped and reaped (by the context manager) before it could sleep its 600 s.
    assert not psutil.pid_exists(job.pid) or psutil.Process(job.pid).status() == psutil.STATUS_ZOMBIE
    job.wait(timeout=30)
    assert bystander.poll() is None, "a process started before the job is not the job's to stop"
    bystander.kill()
    bystander.wait()
