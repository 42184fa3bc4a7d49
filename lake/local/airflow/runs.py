"""Run the lake's DAGs once, without a scheduler: ``airflow dags test`` in the lake's Airflow environment.

    from lake.local.airflow.runs import db_migrate, dags_test
    db_migrate(lake_root)                                     # once per Airflow home (about 5 s on SQLite)
    state, output = dags_test("telemetry_bronze_to_silver", "2026-03-01T09:00:00Z", lake_root)
    state, output = dags_test("telemetry_silver_to_gold", "2026-03-02", lake_root)

``dags test`` runs every task of one DAG run in its own process, for real
(sensors poke, Beam jobs run, gates validate), and records the run in the
Airflow home's database like any other run. Its run covers the data interval
that *ends* at the logical date: logical date 09:00 is the hour 08:00-09:00,
logical date 2026-03-02 is the day 2026-03-01. A failed run returns
``("failed", output)``; the output holds every task's log, with the failing
task's error (a failed gate names its expectations).

A run waits like a scheduled one: an hourly run whose Bronze hour is still
open re-pokes every 2 minutes (up to 12 hours), and a daily run waits for
its 24 hours unless ``conf={"partial_day": True}``; ``timeout`` bounds the
whole command (its process group is killed, and ``state`` is ``"error"``).

Used by ``lake demo`` and the tests; everything runs with
``lake.local.airflow.env.airflow_env`` (home ``{LAKE_ROOT}/_local/airflow`` unless
given), so the same DAG folder, database and lake root as ``lake airflow up``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import subprocess
from typing import Mapping, NamedTuple, Optional, Union

from lake.local.airflow.env import airflow_env, airflow_executable
from lake_core.errors import ConfigError, LakeError

__all__ = ["DagTestRun", "db_migrate", "dags_test"]

DEFAULT_TIMEOUT_S = 1800.0
MIGRATE_TIMEOUT_S = 300.0

When = Union[str, _dt.date, _dt.datetime]


class DagTestRun(NamedTuple):
    state: str  # "success", "failed", or "error" (the command itself failed: an import error, a timeout)
    output: str  # stdout and stderr of `airflow dags test`, interleaved

    @property
    def run_id(self) -> Optional[str]:
        """The run's id (``manual__<when it ran>``), as Airflow logged it; None if the run never finished."""
        found = _FINISHED.search(self.output)
        return found.group(1) if found else None


_FINISHED = re.compile(r"DagRun Finished: dag_id=[^,]+, logical_date=[^,]*, run_id=([^,]+),")


def _logical_date(when: When) -> _dt.datetime:
    if isinstance(when, str):
        text = when.strip().replace("Z", "+00:00")
        try:
            when = _dt.datetime.fromisoformat(text) if "T" in text or " " in text else _dt.date.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                f"not a logical date: {when!r} (expected e.g. 2026-03-01T09:00:00Z or 2026-03-02)"
            ) from None
    if not isinstance(when, _dt.datetime):
        when = _dt.datetime.combine(when, _dt.time(0))
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc)


def _run(args: list, env: dict, timeout: float) -> tuple[int, str]:
    # Its own process group: a timeout stops the Beam jobs the run started, too.
    proc = subprocess.Popen(
        [airflow_executable(), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return -1, f"{output}\n`airflow {' '.join(args)}` did not finish within {timeout:.0f} s and was killed"
    return proc.returncode, output


def _env(lake_root: str, home: Optional[str], extra: Optional[Mapping[str, str]]) -> dict:
    env = airflow_env(lake_root, home=home)
    env.update(extra or {})
    return env


def db_migrate(
    lake_root: str,
    home: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: float = MIGRATE_TIMEOUT_S,
) -> None:
    """Create or upgrade the Airflow database of ``home``; ``LakeError`` with Airflow's output when it fails."""
    full_env = _env(lake_root, home, env)
    os.makedirs(full_env["AIRFLOW_HOME"], exist_ok=True)
    code, output = _run(["db", "migrate"], full_env, timeout)
    if code != 0:
        raise LakeError(
            f"`airflow db migrate` failed ({code}) in {full_env['AIRFLOW_HOME']}: "
            f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}"
        )


def dags_test(
    dag_id: str,
    logical_date: When,
    lake_root: str,
    home: Optional[str] = None,
    conf: Optional[dict] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DagTestRun:
    """Run ``dag_id`` once for ``logical_date`` (run ``db_migrate`` first); see the module docstring.

    ``conf`` is the run's configuration (e.g. ``{"date": "2026-03-01"}`` for
    the daily DAG); ``env`` adds environment variables, e.g.
    ``AIRFLOW_VAR_LAKE_SILVER_MAX_QUARANTINE_RATE`` to set an Airflow Variable.
    """
    args = ["dags", "test", dag_id, _logical_date(logical_date).isoformat()]
    if conf:
        args += ["--conf", json.dumps(conf)]
    code, output = _run(args, _env(lake_root, home, env), timeout)
    if code == 0:
        return DagTestRun("success", output)
    return DagTestRun("failed" if "DagRun failed" in output else "error", output)
