"""The environment every local Airflow process of the lake runs with.

One definition, used by ``lake airflow up``, by ``lake demo`` and by the
tests that run ``airflow dags test``: the same DAG folder, the same home and
the same lake root everywhere, so what the tests prove is what users run.

Airflow reads its whole configuration from ``AIRFLOW__SECTION__KEY``
variables; nothing here writes an ``airflow.cfg``.  A variable the user has
already set (say ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` naming PostgreSQL)
wins over our default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Optional

from lake_schemas.paths import join

__all__ = ["DAGS_FOLDER", "DAG_IDS", "airflow_home", "airflow_env", "airflow_executable"]

#: The repository (this file is lake/local/airflow/env.py): its dags/ and the packages the tasks import.
REPO = Path(__file__).resolve().parents[3]
DAGS_FOLDER = str(REPO / "dags")
DAG_IDS = ("telemetry_bronze_to_silver", "telemetry_silver_to_gold", "telemetry_maintenance")


def airflow_home(lake_root: str) -> str:
    """``{LAKE_ROOT}/_local/airflow``; a remote lake keeps Airflow's home in ``./_local/airflow``."""
    if "://" in lake_root:
        return os.path.abspath(os.path.join("_local", "airflow"))
    return join(lake_root, "_local", "airflow")


def airflow_executable() -> str:
    """The ``airflow`` script of the interpreter running us (the venv's, never another one on PATH)."""
    return str(Path(sys.executable).parent / "airflow")


def airflow_env(
    lake_root: str,
    home: Optional[str] = None,
    dags_folder: Optional[str] = None,
    base: Optional[Mapping[str, str]] = None,
) -> dict:
    """A full process environment for Airflow commands working on ``lake_root``.

    SQLite with the LocalExecutor by default (one machine, nothing to
    install); parallelism 4 because the lake's Beam jobs each want a core.
    """
    env = dict(os.environ if base is None else base)
    home = home or airflow_home(lake_root)
    defaults = {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": dags_folder or DAGS_FOLDER,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": f"{home}/logs",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        # Paused until an operator unpauses them: unpaused, the hourly DAG would start catching up
        # from LAKE_DAGS_START_DATE the moment `lake airflow up` starts a scheduler.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    # The DAGs find the lake the way every `lake` command does.
    env["LAKE_ROOT"] = lake_root
    # Tasks run `python -m ...` and import our packages: the repository must be importable.
    repo = str(REPO)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if repo not in paths:
        env["PYTHONPATH"] = os.pathsep.join([repo, *paths])
    return env
