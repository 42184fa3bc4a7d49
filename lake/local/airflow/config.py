"""The environment the local Airflow's four components run with: ports, login, database."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Optional

from lake.local.airflow.env import airflow_env
from lake.local.airflow.run_files import passwords_file
from lake_core.errors import ConfigError
from lake_core.processes import free_port, port_free

__all__ = ["ADMIN_USER", "stack_env", "seed_password", "login", "database", "check_database_drivers"]

ADMIN_USER = "admin"
# Airflow's defaults for the side servers the components open; a second stack
# on the same machine gets free ports instead of failing to bind.
SIDE_PORTS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": 8974,
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": 8793,
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": 8794,
}


def stack_env(
    lake_root: str, host: str, port: int, home: Optional[str] = None, dags_folder: Optional[str] = None
) -> dict:
    """``airflow_env`` plus what the four components need to find each other and the login."""
    env = airflow_env(lake_root, home=home, dags_folder=dags_folder)
    home = env["AIRFLOW_HOME"]
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    env.setdefault(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{ADMIN_USER}:admin")
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords_file(home)))
    # Tasks report to the api-server's execution API; Airflow assumes localhost:8080.
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://{connect_host}:{port}/execution/")
    # Its 5 s default fails tasks (a retry minutes later) when one machine runs everything at once.
    env.setdefault("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30")
    for key, default in SIDE_PORTS.items():
        if key not in env:
            env[key] = str(default if port_free("0.0.0.0", default) else free_port())
    return env


def first_user(env: dict) -> str:
    users = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "")
    return users.split(",")[0].split(":")[0].strip() or ADMIN_USER


def seed_password(env: dict) -> None:
    """Give the login user a random password before the api-server would print one to its log."""
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError):
        passwords = {}
    user = first_user(env)
    if not isinstance(passwords, dict) or not passwords.get(user):
        passwords = dict(passwords) if isinstance(passwords, dict) else {}
        passwords[user] = secrets.token_urlsafe(16)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(passwords) + "\n")


def login(env: dict) -> tuple:
    user = first_user(env)
    try:
        password = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text()).get(user, "")
    except (OSError, ValueError, AttributeError):
        password = ""
    return user, password


def database(env: dict) -> str:
    from sqlalchemy.engine import make_url  # Airflow's dependency: present whenever Airflow is

    try:
        return make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: Airflow itself reports it on migrate
        return "(unparsable AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"


def check_database_drivers(env: dict) -> None:
    """A PostgreSQL URL without its drivers fails deep in ``db migrate``; say what to install instead."""
    import importlib.util

    from sqlalchemy.engine import make_url

    try:
        url = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    except Exception:  # noqa: BLE001 - ``db migrate`` reports a malformed URL itself
        return
    if url.get_backend_name() != "postgresql":
        return
    wanted = [url.get_driver_name() or "psycopg2"]
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in env:
        wanted.append("asyncpg")  # Airflow derives its async connection as postgresql+asyncpg
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        packages = " ".join("psycopg2-binary" if name == "psycopg2" else name for name in missing)
        raise ConfigError(
            f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names PostgreSQL but {', '.join(missing)} "
            f"is not installed: pip install {packages}"
        )
