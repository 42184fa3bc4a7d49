"""The hour or the day a DAG run covers, read from its data interval only.

A scheduled run with logical date X covers ``[X, X+1h)`` (``[X, X+1d)``
daily); ``airflow dags test`` and manual runs with logical date X cover the
interval that ended at X. Either way the tasks read ``data_interval_start``
and ``data_interval_end`` and never the clock, so a backfill of last month
processes last month.
"""

from __future__ import annotations

import datetime as _dt
from typing import Mapping, Optional

from lake_core.errors import ConfigError
from lake_schemas.paths import HOUR_FORMAT

__all__ = ["interval_hour", "interval_day", "hour_start_ms", "as_utc"]

HOUR = _dt.timedelta(hours=1)
DAY = _dt.timedelta(days=1)


def as_utc(value) -> _dt.datetime:
    if value is None:
        raise ConfigError(
            "this run has no data interval (a run without a logical date): "
            'trigger it with a logical date, or with conf {"date": "YYYY-MM-DD"} for a Gold day'
        )
    if value.tzinfo is None:
        raise ConfigError(f"a data interval bound without a time zone: {value!r}")
    return _dt.datetime.fromtimestamp(value.timestamp(), _dt.timezone.utc)


def interval_hour(start, end) -> str:
    """``2026-03-01T08`` for the interval ``[08:00, 09:00)`` UTC; ``ConfigError`` for anything but one whole hour."""
    start, end = as_utc(start), as_utc(end)
    if end - start != HOUR or start.minute or start.second or start.microsecond:
        raise ConfigError(f"the hourly DAG needs a data interval of one whole UTC hour, not {start} .. {end}")
    return start.strftime(HOUR_FORMAT)


def hour_start_ms(hour: str) -> int:
    return int(_dt.datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=_dt.timezone.utc).timestamp() * 1000)


def interval_day(start, end, conf: Optional[Mapping] = None) -> _dt.date:
    """The UTC day of a daily run: ``conf["date"]`` when given (a late-data re-run), else its data interval's."""
    if conf and conf.get("date"):
        try:
            return _dt.date.fromisoformat(str(conf["date"]))
        except ValueError:
            raise ConfigError(f"conf date is not a date: {conf['date']!r} (expected YYYY-MM-DD)") from None
    start, end = as_utc(start), as_utc(end)
    if end - start != DAY or start.time() != _dt.time(0):
        raise ConfigError(f"the daily DAG needs a data interval of one whole UTC day, not {start} .. {end}")
    return start.date()
