"""The measurement fields of a message (contract section 1), declared once.

Each ``MessageField`` says where a value sits in a snapshot (``group``,
``name``), which Silver column it fills, its kind, unit and meaning, and its
plausible range. From this one table come the snapshot's group structs
(``messages.Location``...), the Silver columns that mirror the message
(``tables.MEASUREMENT_FIELDS``), the snapshot-to-column map
(``messages.SNAPSHOT_COLUMNS``), the ranges the rules check
(``rules.LAT_RANGE``...) and the reference in ``docs/tables.md``.
``SIGNALS`` says which column each signal of shape 1b fills.

Order is the contract's (section 3's column order); never reorder: Silver's
and Gold's schemas follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Optional

import msgspec
import pyarrow as pa

__all__ = [
    "Number",
    "Kind",
    "MessageField",
    "MESSAGE_FIELDS",
    "GROUPS",
    "SignalField",
    "SIGNALS",
    "field_of",
    "closed_range",
]

#: A number field of a message. A finite bound on every number rejects 1e400 (which decodes to inf)
#: while leaving the physical range checks to Silver's quarantine rules.
Number = Optional[Annotated[float, msgspec.Meta(ge=-1.0e15, le=1.0e15)]]


class Kind(Enum):
    """What a field holds: its msgspec annotation (decoding) and its Arrow type (storing)."""

    NUMBER = (Number, pa.float64(), "number")
    BOOLEAN = (Optional[bool], pa.bool_(), "boolean")
    TEXT = (Optional[str], pa.string(), "string")
    TEXT_LIST = (Optional[list[str]], pa.list_(pa.string()), "array of strings")

    def __init__(self, annotation: Any, arrow_type: pa.DataType, json_type: str) -> None:
        self.annotation = annotation
        self.arrow_type = arrow_type
        self.json_type = json_type


@dataclass(frozen=True)
class MessageField:
    """One measurement: ``{group: {name: value}}`` in a snapshot, column ``column`` in Silver."""

    group: str
    name: str
    column: str
    kind: Kind
    unit: str
    meaning: str
    #: The plausible range (inclusive; ``None`` is open). What a value outside it does is the
    #: rules' choice (``rules.QUARANTINE_RULES`` drop the row, ``rules.EXPECTATIONS`` warn).
    low: Optional[float] = None
    high: Optional[float] = None

    @property
    def arrow_field(self) -> pa.Field:
        """The Silver column (nullable: every group and field of a snapshot may be missing)."""
        return pa.field(self.column, self.kind.arrow_type)


_N, _B, _T = Kind.NUMBER, Kind.BOOLEAN, Kind.TEXT

MESSAGE_FIELDS: tuple[MessageField, ...] = (
    MessageField("location", "lat", "lat", _N, "degrees", "WGS 84 latitude", -90.0, 90.0),
    MessageField("location", "lon", "lon", _N, "degrees", "WGS 84 longitude", -180.0, 180.0),
    MessageField("location", "alt_m", "alt_m", _N, "m", "altitude above sea level"),
    MessageField("location", "accuracy_m", "accuracy_m", _N, "m", "radius of the position's uncertainty", 0.0),
    MessageField("battery", "soc_pct", "soc_pct", _N, "%", "battery state of charge", 0.0, 100.0),
    MessageField("battery", "voltage_v", "voltage_v", _N, "V", "battery pack voltage"),
    MessageField("battery", "current_a", "current_a", _N, "A", "battery current, negative while discharging"),
    MessageField("battery", "temp_c", "battery_temp_c", _N, "°C", "battery temperature", -40.0, 100.0),
    MessageField("battery", "charging", "charging", _B, "", "the battery is charging"),
    MessageField("motion", "speed_kmh", "speed_kmh", _N, "km/h", "ground speed", 0.0, 300.0),
    MessageField("motion", "heading_deg", "heading_deg", _N, "degrees", "course, clockwise from north", 0.0, 360.0),
    MessageField("motion", "accel_ms2", "accel_ms2", _N, "m/s²", "longitudinal acceleration, negative when braking"),
    MessageField("status", "locked", "locked", _B, "", "the vehicle is locked"),
    MessageField("status", "in_use", "in_use", _B, "", "a ride is under way (counts as usage in Gold)"),
    MessageField("status", "ignition", "ignition", _B, "", "the ignition (or drive system) is on"),
    MessageField("status", "trip_id", "trip_id", _T, "", "the sender's id of the current trip"),
    MessageField("diagnostics", "odometer_km", "odometer_km", _N, "km", "total distance on the odometer"),
    MessageField("diagnostics", "error_codes", "error_codes", Kind.TEXT_LIST, "", "active fault codes"),
)

#: The snapshot's groups, in message order.
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f.group for f in MESSAGE_FIELDS))

_BY_COLUMN = {f.column: f for f in MESSAGE_FIELDS}


def field_of(column: str) -> MessageField:
    """The message field that fills Silver column ``column`` (KeyError if none does)."""
    return _BY_COLUMN[column]


def closed_range(column: str) -> tuple[float, float]:
    """``(low, high)`` of a field whose range is closed on both sides."""
    f = field_of(column)
    if f.low is None or f.high is None:
        raise ValueError(f"{column} has no closed range")
    return (f.low, f.high)


@dataclass(frozen=True)
class SignalField:
    """A signal name of shape 1b and the Silver column its value fills."""

    name: str
    column: str
    #: ``0`` is false, any other number true (``rules.boolean_signal``).
    boolean: bool = False


#: Contract section 1b, in its order.
SIGNALS: tuple[SignalField, ...] = (
    SignalField("odometer", "odometer_km"),
    SignalField("soc", "soc_pct"),
    SignalField("speed", "speed_kmh"),
    SignalField("ignition", "ignition", boolean=True),
    SignalField("lat", "lat"),
    SignalField("lon", "lon"),
    SignalField("battery_temp", "battery_temp_c"),
    SignalField("charging", "charging", boolean=True),
)
