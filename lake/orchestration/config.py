"""The DAGs' settings: an Airflow Variable, else an environment variable, else a default.

| Airflow Variable                   | environment                        | default                  |
|------------------------------------|------------------------------------|--------------------------|
| ``lake_root``                      | ``LAKE_ROOT``                      | none: one must be set    |
| ``lake_beam_runner``               | ``LAKE_BEAM_RUNNER``               | ``FnApiRunner`` (local)  |
| ``lake_beam_options``              | ``LAKE_BEAM_OPTIONS``              | ``{}``                   |
| ``lake_silver_max_quarantine_rate``| ``LAKE_SILVER_MAX_QUARANTINE_RATE``| ``0.1`` (the contract's) |
| ``lake_bronze_retention_days``,    | same names, upper case             | ``lake.lifecycle.maintenance``'s   |
| ``lake_silver_retention_days``,    |                                    | (90, 730, 1825 days,     |
| ``lake_gold_retention_days``,      |                                    | 168 hours)               |
| ``lake_vacuum_retention_hours``    |                                    |                          |

``lake_beam_options`` is a JSON object of Beam pipeline options passed to
both jobs as ``--key=value`` (e.g. ``{"flink_master": "flink:8081",
"environment_type": "LOOPBACK"}`` for Flink, or ``{"project": "p",
"region": "europe-west1", "temp_location": "gs://b/tmp", "setup_file":
"/opt/lake/setup.py"}`` for Dataflow, whose workers install the project from
``setup_file``); the jobs' own flags (``shards``) may go there too. With a
remote runner the lake root must be one the workers reach (``s3://``,
``gs://``). Credentials are never Variables: Beam's runners read them from
the environment (``GOOGLE_APPLICATION_CREDENTIALS``, ``AWS_*``).

Read inside tasks only: a Variable read at parse time would cost a
metadata-database call at every parse and freeze the value into the DAG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Optional

from lake_core.errors import ConfigError
from lake_core.settings import env, normalize_root
from lake_schemas.rules import QUARANTINE_RATE_MAX

__all__ = ["JobConfig", "job_config", "maintenance_limits", "airflow_variable"]

DEFAULT_RUNNER = "FnApiRunner"

#: ``get(name) -> value or None``: how a Variable is read (Airflow's, unless a caller passes another).
VariableGetter = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class JobConfig:
    lake_root: str
    runner: str = DEFAULT_RUNNER
    beam_options: dict = field(default_factory=dict)
    max_quarantine_rate: float = QUARANTINE_RATE_MAX


def airflow_variable(name: str) -> Optional[str]:
    """The Airflow Variable ``name``, or None when it is not set (only inside a running task)."""
    from airflow.sdk import Variable

    return Variable.get(name, default=None)


def _setting(get: VariableGetter, name: str) -> Optional[str]:
    value = get(name)
    if value in (None, ""):
        value = env(name.upper())
    return None if value in (None, "") else str(value)


def job_config(get: VariableGetter = airflow_variable) -> JobConfig:
    """The settings of this task run; ``ConfigError`` naming the setting when one is wrong."""
    root = _setting(get, "lake_root")
    if root is None:
        raise ConfigError("no lake root: set the Airflow Variable lake_root or the environment variable LAKE_ROOT")
    options_text = _setting(get, "lake_beam_options") or "{}"
    try:
        options = json.loads(options_text)
    except ValueError as exc:
        raise ConfigError(f"lake_beam_options is not JSON ({exc}): {options_text!r}") from None
    if not isinstance(options, dict):
        raise ConfigError(f"lake_beam_options must be a JSON object of Beam options, not {options_text!r}")
    rate_text = _setting(get, "lake_silver_max_quarantine_rate")
    try:
        rate = QUARANTINE_RATE_MAX if rate_text is None else float(rate_text)
    except ValueError:
        raise ConfigError(f"lake_silver_max_quarantine_rate is not a number: {rate_text!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"lake_silver_max_quarantine_rate must be between 0 and 1, not {rate}")
    return JobConfig(
        lake_root=normalize_root(root),
        runner=_setting(get, "lake_beam_runner") or DEFAULT_RUNNER,
        beam_options=options,
        max_quarantine_rate=rate,
    )


_MAINTENANCE_LIMITS = {
    "lake_bronze_retention_days": ("bronze_days", int),
    "lake_silver_retention_days": ("silver_days", int),
    "lake_gold_retention_days": ("gold_days", int),
    "lake_vacuum_retention_hours": ("vacuum_hours", int),
}


def maintenance_limits(get: VariableGetter = airflow_variable) -> dict:
    """The retention limits set for ``lake.lifecycle.maintenance.maintain`` (only those set; it checks their values)."""
    limits = {}
    for name, (argument, kind) in _MAINTENANCE_LIMITS.items():
        text = _setting(get, name)
        if text is None:
            continue
        try:
            limits[argument] = kind(text)
        except ValueError:
            raise ConfigError(f"{name} is not a number: {text!r}") from None
    return limits
