"""Airflow homes for the DAG tests: ``airflow db migrate`` once per session, then a copy per home.

Migrating takes seconds; copying the migrated SQLite file takes none, and
each test module gets a database of its own (the runs of one module, such as
a failed hour, never leak into another's ``depends_on_past``).
"""

from __future__ import annotations

import shutil

from lake.local.airflow.runs import db_migrate

_MIGRATED: dict = {}


def fresh_airflow_home(tmp_path_factory) -> str:
    if "db" not in _MIGRATED:
        template = tmp_path_factory.mktemp("airflow-migrated")
        db_migrate(str(template / "no-lake"), home=str(template))
        _MIGRATED["db"] = template / "airflow.db"
    home = tmp_path_factory.mktemp("airflow-home")
    shutil.copy(_MIGRATED["db"], home / "airflow.db")
    return str(home)
