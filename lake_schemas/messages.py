"""The two message shapes of contract section 1 as typed structs.

msgspec checks types, patterns and lengths in C while it decodes, which is
what lets validation keep up with the broker (one Python object per message
would not).
"""

from __future__ import annotations

import re
from typing import Annotated, Optional, Union

import msgspec

VEHICLE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_VEHICLE_ID = re.compile(VEHICLE_ID_PATTERN)


def is_vehicle_id(value: object) -> bool:
    """``value`` matches ``VEHICLE_ID_PATTERN`` whole (no trailing newline, which ``$`` lets through)."""
    return isinstance(value, str) and _VEHICLE_ID.fullmatch(value) is not None


SNAPSHOT_SCHEMA_VERSIONS = frozenset({1})

# A finite bound on every number: rejects 1e400 (which decodes to inf) while
# leaving the physical range checks to Silver's quarantine rules.
_Num = Optional[Annotated[float, msgspec.Meta(ge=-1.0e15, le=1.0e15)]]
MAX_EVENT_ID_CHARS = 64


class Location(msgspec.Struct, omit_defaults=True, gc=False):
    lat: _Num = None
    lon: _Num = None
    alt_m: _Num = None
    accuracy_m: _Num = None


class Battery(msgspec.Struct, omit_defaults=True, gc=False):
    soc_pct: _Num = None
    voltage_v: _Num = None
    current_a: _Num = None
    temp_c: _Num = None
    charging: Optional[bool] = None


class Motion(msgspec.Struct, omit_defaults=True, gc=False):
    speed_kmh: _Num = None
    heading_deg: _Num = None
    accel_ms2: _Num = None


class Status(msgspec.Struct, omit_defaults=True, gc=False):
    locked: Optional[bool] = None
    in_use: Optional[bool] = None
    ignition: Optional[bool] = None
    trip_id: Optional[str] = None


class Diagnostics(msgspec.Struct, omit_defaults=True, gc=False):
    odometer_km: _Num = None
    error_codes: Optional[list[str]] = None


class Snapshot(msgspec.Struct, omit_defaults=True, gc=False):
    """Shape 1a. Required fields are Optional here so that a missing one is
    reported as ``missing_field`` naming it, not as a decode error. The id
    pattern and the time format are checked after decoding: msgspec's
    ``pattern`` and ``datetime`` constraints cost three times its decode."""

    schema_version: Optional[int] = None
    event_id: Optional[str] = None
    vehicle_id: Optional[str] = None
    ts: Optional[Union[str, int]] = None
    location: Optional[Location] = None
    battery: Optional[Battery] = None
    motion: Optional[Motion] = None
    status: Optional[Status] = None
    diagnostics: Optional[Diagnostics] = None


class Signal(msgspec.Struct, omit_defaults=True, gc=False):
    """Shape 1b: one signal of a fragmented TCU event."""

    did: Optional[str] = None
    timestamp: Optional[int] = None
    name: Optional[str] = None
    float_value: _Num = None
    int_value: Optional[Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)]] = None


#: Signal name -> the Silver column it fills.
SIGNAL_COLUMNS: dict[str, str] = {
    "odometer": "odometer_km",
    "soc": "soc_pct",
    "speed": "speed_kmh",
    "ignition": "ignition",
    "lat": "lat",
    "lon": "lon",
    "battery_temp": "battery_temp_c",
    "charging": "charging",
}
#: Signals whose 0/1 value becomes false/true.
BOOLEAN_SIGNALS = frozenset({"ignition", "charging"})

#: Snapshot group field -> Silver column (where the names differ or nest).
SNAPSHOT_COLUMNS: dict[tuple[str, str], str] = {
    ("location", "lat"): "lat",
    ("location", "lon"): "lon",
    ("location", "alt_m"): "alt_m",
    ("location", "accuracy_m"): "accuracy_m",
    ("battery", "soc_pct"): "soc_pct",
    ("battery", "voltage_v"): "voltage_v",
    ("battery", "current_a"): "current_a",
    ("battery", "temp_c"): "battery_temp_c",
    ("battery", "charging"): "charging",
    ("motion", "speed_kmh"): "speed_kmh",
    ("motion", "heading_deg"): "heading_deg",
    ("motion", "accel_ms2"): "accel_ms2",
    ("status", "locked"): "locked",
    ("status", "in_use"): "in_use",
    ("status", "ignition"): "ignition",
    ("status", "trip_id"): "trip_id",
    ("diagnostics", "odometer_km"): "odometer_km",
    ("diagnostics", "error_codes"): "error_codes",
}


def signal_event_id(did: str, name: str, timestamp_ms: int) -> str:
    """A signal has no id of its own: derive one so a redelivery is the same event."""
    return f"{did}:{name}:{timestamp_ms}"
