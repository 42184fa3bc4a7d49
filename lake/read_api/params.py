"""The read API's query parameters: parsed and checked once, each mistake a clear 400.

Times are RFC 3339 (with an offset or ``Z``) or integer epoch milliseconds,
like the messages' ``ts`` (contract section 1a).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Mapping, Optional

from lake_schemas.messages import VEHICLE_ID_PATTERN

__all__ = [
    "BadParameter",
    "parse_time_ms",
    "parse_int",
    "parse_bool",
    "parse_choice",
    "parse_pattern",
    "check_vehicle_id",
    "reject_unknown",
    "ZONE_PATTERN",
    "TYPE_PATTERN",
    "RULE_PATTERN",
    "MAX_RANGE_DAYS",
    "MAX_POINTS",
    "MAX_VEHICLES_PAGE",
]

MAX_RANGE_DAYS = 400  # a telemetry range longer than this is refused: more than a year of Silver
MAX_POINTS = 10_000  # the most points a series answer has (and the default)
MAX_VEHICLES_PAGE = 10_000  # the largest page of GET /v1/vehicles: a whole 10K fleet in one answer
_VEHICLE_ID = re.compile(VEHICLE_ID_PATTERN)
ZONE_PATTERN = r"^[0-9b-hjkmnp-z]{1,12}$"  # a geohash (or a prefix of one)
TYPE_PATTERN = r"^[a-z0-9_-]{1,32}$"
RULE_PATTERN = r"^[a-z0-9_]{1,64}$"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_MIN_MS = 946_684_800_000  # 2000-01-01, as the ingest's record timestamps
_MAX_MS = 4_102_444_800_000  # 2100-01-01


class BadParameter(ValueError):
    """A parameter the API refuses: answered 400 with ``{"error": ..., "parameter": ...}``."""

    def __init__(self, parameter: str, message: str, status: int = 400):
        super().__init__(message)
        self.parameter = parameter
        self.status = status


def reject_unknown(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in query:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter {name!r} (allowed: {', '.join(allowed) or 'none'})")


def check_vehicle_id(value: str) -> str:
    if _VEHICLE_ID.fullmatch(value) is None:
        raise BadParameter("vehicle_id", "a vehicle id is 1 to 64 letters, digits, '_' or '-'")
    return value


def parse_time_ms(name: str, value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"-?\d{1,16}", text):
        ms = int(text)
    elif _RFC3339.fullmatch(text):
        try:
            parsed = dt.datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
        except ValueError as exc:
            raise BadParameter(name, f"{name}: {exc}") from None
        ms = int(parsed.timestamp() * 1000)
    else:
        raise BadParameter(name, f"{name} must be RFC 3339 with an offset (2026-03-01T08:00:00Z) or epoch ms")
    if not _MIN_MS <= ms < _MAX_MS:
        raise BadParameter(name, f"{name} must be between 2000-01-01 and 2100-01-01")
    return ms


def parse_int(name: str, value: Optional[str], default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"\d{1,9}", value.strip()):
        raise BadParameter(name, f"{name} must be a whole number between {low} and {high}")
    number = int(value)
    if not low <= number <= high:
        raise BadParameter(name, f"{name} must be between {low} and {high}")
    return number


def parse_bool(name: str, value: Optional[str]) -> Optional[bool]:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadParameter(name, f"{name} must be true or false")


def parse_choice(name: str, value: Optional[str], choices: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value not in choices:
        raise BadParameter(name, f"{name} must be one of {', '.join(choices)}")
    return value


def parse_pattern(name: str, value: Optional[str], pattern: str, what: str) -> Optional[str]:
    if value is None:
        return None
    if re.fullmatch(pattern, value) is None:
        raise BadParameter(name, f"{name} must be {what}")
    return value
