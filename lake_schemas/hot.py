"""The hot path's rules (contract section 9), in one file.

Thresholds, horizons, window sizes, alert rules and their severities, the
alerts topic, the deterministic alert id, and the scalar twins of Silver's
rules 1 and 2 (``lake_schemas.rules`` holds them as Arrow functions for the
batch jobs; both read the same constants, and ``tests/test_hot_rules.py``
checks that both agree on every edge case).

What the contract leaves open, decided here:
- Windows, the dedup horizon and the "too late" line are measured against
  each vehicle's own event-time watermark (the latest corrected ``event_ts``
  it sent): a vehicle whose clock lags by 8 minutes is not late, and one
  vehicle cannot make another's events late. Zone windows, which mix
  vehicles, close on the partition's watermark.
- An event older than its vehicle's watermark minus the horizon (10 min) is
  *too late*: its windows are final and its duplicate could no longer be
  recognised, so it updates only the latest-value columns of
  ``live_vehicle_state`` where it is newer, and is counted (``too_late``).
- ``offline`` by processing time applies only to vehicles whose last
  message arrived (Kafka record time) within ``OFFLINE_LIVE_WINDOW_MS`` of
  the wall clock: a replay of last month's topic is judged by event time alone.
- ``last_seen_at`` is the Kafka record timestamp (the ingest clock, as
  Bronze's ``ingest_ts``), so a replay rebuilds the same rows.
"""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

import msgspec
import pyarrow as pa

from lake_schemas.fields import GROUPS
from lake_schemas.messages import BOOLEAN_SIGNALS, SIGNAL_COLUMNS, SNAPSHOT_COLUMNS, Signal, Snapshot, signal_event_id
from lake_schemas.rules import (
    LAT_RANGE,
    LON_RANGE,
    LOW_BATTERY_SOC_PCT,
    MAX_FUTURE_SKEW_MS,
    MAX_PAST_SKEW_MS,
    SOC_RANGE,
    SPEED_RANGE,
    QuarantineReason,
)

__all__ = [
    "ALERTS_TOPIC",
    "AlertRule",
    "HotRules",
    "DEFAULT_RULES",
    "HOT_SCHEMA",
    "alert_id",
    "alert_message",
    "correct_event_ms",
    "quarantine_reason",
    "decode_fields",
    "fields_of",
]

#: Where alert events go (contract section 9).
ALERTS_TOPIC = "vehicle-alerts"
#: The PostgreSQL schema of the hot store.
HOT_SCHEMA = "hot"
#: The default hot-store DSN: a database ``lake_hot`` on the local server (``LAKE_HOT_DSN`` replaces it).
DEFAULT_HOT_DSN = "postgresql://postgres@127.0.0.1:5432/lake_hot"
MINUTE_MS = 60_000


class AlertRule(str, Enum):
    LOW_BATTERY = "low_battery"
    GEOFENCE = "geofence"
    OFFLINE = "offline"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class HotRules:
    """Every threshold of the hot path; ``DEFAULT_RULES`` are the contract's."""

    #: low_battery opens when soc_pct is strictly below this while not charging ...
    low_battery_open_pct: float = LOW_BATTERY_SOC_PCT
    #: ... and resolves when soc_pct is at least this, or the vehicle charges.
    low_battery_resolve_pct: float = 20.0
    #: offline opens after this long without a message.
    offline_after_ms: int = 10 * MINUTE_MS
    #: A rule that opens again within this long of resolving reopens the same alert.
    reopen_within_ms: int = 5 * MINUTE_MS
    #: Duplicates (vehicle_id, event_id) are recognised this far behind the vehicle's watermark.
    dedup_horizon_ms: int = 10 * MINUTE_MS
    #: A window takes late events this long after it ends, then is final.
    allowed_lateness_ms: int = 10 * MINUTE_MS
    #: The tumbling windows, in ms: 1 and 5 minutes.
    window_sizes_ms: tuple[int, ...] = (MINUTE_MS, 5 * MINUTE_MS)
    #: Zone activity's window.
    zone_window_ms: int = 5 * MINUTE_MS
    #: Processing-time offline is judged only for vehicles heard from this recently (wall clock).
    offline_live_window_ms: int = 24 * 60 * MINUTE_MS
    #: Hot tables keep this many days (by event day), then the day's partitions are dropped.
    hot_days: int = 3

    @property
    def horizon_ms(self) -> int:
        """How far behind its watermark a vehicle's events still count (dedup and windows)."""
        return max(self.dedup_horizon_ms, self.allowed_lateness_ms)


DEFAULT_RULES = HotRules()

#: Severity of each rule's alerts.
SEVERITY: dict[AlertRule, str] = {
    AlertRule.LOW_BATTERY: "warning",
    AlertRule.GEOFENCE: "critical",
    AlertRule.OFFLINE: "warning",
}

_ALERT_NAMESPACE = uuid.UUID("5b0c3a55-7e0a-4a43-9d34-6d2f1d0a1e12")


def alert_id(vehicle_id: str, rule: str, opened_at_ms: int) -> str:
    """Deterministic: a replay of the topic from its start gives every alert the same id."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{vehicle_id}|{rule}|{opened_at_ms}"))


def iso_ms(ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds (``2026-03-01T08:00:00.250Z``)."""
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def alert_message(alert: str, vehicle_id: str, rule: str, state: str, at_ms: int, details: dict) -> bytes:
    """The ``vehicle-alerts`` record of one open or resolve (contract section 9)."""
    return msgspec.json.encode(
        {
            "alert_id": alert,
            "vehicle_id": vehicle_id,
            "rule": rule,
            "state": state,
            "at": iso_ms(at_ms),
            "details": details,
        }
    )


#: ``gold_alerts`` (``{LAKE_ROOT}/gold/alerts``, Delta, partitioned by ``event_date`` = the UTC day of
#: ``opened_at``): the daily DAG's copy of the hot store's alerts opened that day, as they stood then.
GOLD_ALERTS_TABLE = "gold_alerts"
GOLD_ALERTS_SCHEMA = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("opened_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("resolved_at", pa.timestamp("ms", tz="UTC")),
        pa.field("details", pa.string(), nullable=False),  # JSON
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)


def gold_alerts_failures(table: pa.Table) -> list[str]:
    """The gate of ``gold_alerts`` (fails the copy, publishes nothing): what is wrong, empty when nothing is."""
    failures = []
    ids = table.column("alert_id").to_pylist()
    if len(set(ids)) != len(ids):
        failures.append("alert_id is not unique")
    unknown = set(table.column("rule").to_pylist()) - {r.value for r in AlertRule}
    if unknown:
        failures.append(f"unknown rule(s) {sorted(unknown)}")
    for opened, resolved in zip(table.column("opened_at").to_pylist(), table.column("resolved_at").to_pylist()):
        if resolved is not None and resolved < opened:
            failures.append("resolved_at before opened_at")
            break
    return failures


# --------------------------------------------------------------------------
# Silver's rules 1 and 2, one event at a time
# --------------------------------------------------------------------------
def correct_event_ms(event_ms: int, ingest_ms: int) -> tuple[int, bool]:
    """Rule 1 (``rules.correct_event_time``): ``(event_ms, corrected)``."""
    skew = event_ms - ingest_ms
    if skew > MAX_FUTURE_SKEW_MS or skew < -MAX_PAST_SKEW_MS:
        return ingest_ms, True
    return event_ms, False


def _outside(value: Optional[float], bounds: tuple[float, float]) -> bool:
    if value is None:
        return False
    return math.isnan(value) or not bounds[0] <= value <= bounds[1]


def quarantine_reason(fields: dict) -> Optional[str]:
    """Rule 2 (``rules.quarantine_reasons``) on one event's columns: the first failing reason, or None."""
    lat, lon = fields.get("lat"), fields.get("lon")
    if (
        (lat is None) != (lon is None)
        or (lat == 0.0 and lon == 0.0)
        or _outside(lat, LAT_RANGE)
        or _outside(lon, LON_RANGE)
    ):
        return QuarantineReason.INVALID_GPS.value
    if _outside(fields.get("soc_pct"), SOC_RANGE):
        return QuarantineReason.INVALID_SOC.value
    if _outside(fields.get("speed_kmh"), SPEED_RANGE):
        return QuarantineReason.INVALID_SPEED.value
    return None


# --------------------------------------------------------------------------
# One accepted message -> its Silver columns
# --------------------------------------------------------------------------
_SNAPSHOT = msgspec.json.Decoder(Snapshot)
_SIGNAL = msgspec.json.Decoder(Signal)
#: Snapshot group -> ((field, Silver column), ...), from ``messages.SNAPSHOT_COLUMNS``.
_GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    group: tuple((name, column) for (g, name), column in SNAPSHOT_COLUMNS.items() if g == group) for group in GROUPS
}


def decode_fields(value: bytes, shape: str) -> tuple[Optional[str], dict, Optional[str]]:
    """An accepted message (``validate_message`` said ``shape``) -> ``(event_id, columns, signal name)``.

    The columns are the non-null Silver measurement columns it carries. A
    signal's event id is derived (``signal_event_id``); its name is returned
    so lat/lon halves can be paired, as Silver pairs them.
    """
    return fields_of((_SIGNAL if shape == "signal" else _SNAPSHOT).decode(value))


def fields_of(message: Any) -> tuple[Optional[str], dict, Optional[str]]:
    """``decode_fields`` of a message already decoded (``validation.validate_and_decode``)."""
    if isinstance(message, Signal):
        sig = message
        assert sig.did is not None and sig.name is not None and sig.timestamp is not None  # validated
        number: Optional[float]
        if sig.float_value is not None and math.isfinite(sig.float_value):
            number = float(sig.float_value)
        else:
            number = None if sig.int_value is None else float(sig.int_value)
        column = SIGNAL_COLUMNS[sig.name]
        cell: Any = number
        if sig.name in BOOLEAN_SIGNALS and number is not None:
            cell = number != 0
        return signal_event_id(sig.did, sig.name, sig.timestamp), ({column: cell} if cell is not None else {}), sig.name
    snap = message
    out: dict = {}
    for group, pairs in _GROUPS.items():
        struct = getattr(snap, group)
        if struct is None:
            continue
        for attr, column in pairs:
            v = getattr(struct, attr)
            if v is not None:
                out[column] = v
    return snap.event_id, out, None
