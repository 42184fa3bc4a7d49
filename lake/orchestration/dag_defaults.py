"""What the three DAGs share: owner, retries, the retry policy, the start date.

Retries back off exponentially (2 min, 4, 8, capped at 30) for what may pass
on its own: a crashed worker, a storage hiccup, a lost Delta commit race the
job's own retries did not win. What cannot pass by retrying fails at once:
a failed quality gate, missing or corrupt input, a bad setting
(``QualityGateFailed``, ``LakeDataError``, ``ConfigError``, an imbalance of the
ledger: ``LedgerImbalance``); re-running the
same batch through the same gate would only fail again, later.

The DAGs start at ``LAKE_DAGS_START_DATE`` (an ISO date, read when the DAG
file is parsed; default 2026-03-01, the simulator's default start) and catch
up from there: an environment variable, not an Airflow Variable, because a
start date must not change between two parses.
"""

from __future__ import annotations

import datetime as _dt

from lake_core.errors import ConfigError
from lake_core.settings import env

__all__ = ["OWNER", "default_args", "start_date"]

OWNER = "telemetry-lake"
DEFAULT_START_DATE = "2026-03-01"


def start_date() -> _dt.datetime:
    text = env("LAKE_DAGS_START_DATE") or DEFAULT_START_DATE
    try:
        day = _dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"LAKE_DAGS_START_DATE is not a date: {text!r} (expected YYYY-MM-DD)") from None
    return _dt.datetime.combine(day, _dt.time(0), _dt.timezone.utc)


def _retry_policy():
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=[
                    "lake_core.errors.QualityGateFailed",
                    "lake_core.errors.LakeDataError",
                    "lake_core.errors.ConfigError",
                    "lake_core.errors.LedgerImbalance",
                ],
                action=RetryAction.FAIL,
                reason="the same input would fail the same way: fix it, then clear the task",
            ),
        ]
    )


def default_args(**overrides) -> dict:
    args = {
        "owner": OWNER,
        "retries": 3,
        "retry_delay": _dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,  # a multiplier in Airflow 3.3: 2, 4, 8 min...
        "max_retry_delay": _dt.timedelta(minutes=30),
        "retry_policy": _retry_policy(),
    }
    args.update(overrides)
    return args
