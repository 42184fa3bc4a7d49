"""The two message shapes of contract section 1 as typed structs.

The snapshot's groups (``Location``, ``Battery``...) are built from
``lake_schemas.fields.MESSAGE_FIELDS``, the one definition the Silver
columns come from too.

msgspec checks types, patterns and lengths in C while it decodes, which is
what lets validation keep up with the broker (one Python object per message
would not).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Optional, TypeAlias, Union

import msgspec

from lake_schemas.fields import MESSAGE_FIELDS, SIGNALS, Number

VEHICLE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_VEHICLE_ID = re.compile(VEHICLE_ID_PATTERN)


_SEEN_IDS: set[str] = set()  # ids that matched: a fleet repeats a few thousand ids millions of times
_SEEN_MAX = 200_000  # bounded: a flood of distinct ids costs the regex, never memory


def is_vehicle_id(value: object, _seen: set = _SEEN_IDS) -> bool:
    """``value`` matches ``VEHICLE_ID_PATTERN`` whole (no trailing newline, which ``$`` lets through)."""
    if not isinstance(value, str):  # first: a list or a dict (hostile JSON) cannot be looked up in a set
        return False
    if value in _seen:
        return True
    if _VEHICLE_ID.fullmatch(value) is None:
        return False
    if len(_seen) >= _SEEN_MAX:
        _seen.clear()
    _seen.add(value)
    return True


SNAPSHOT_SCHEMA_VERSIONS = frozenset({1})

MAX_EVENT_ID_CHARS = 64


def _group_struct(group: str) -> type[msgspec.Struct]:
    """The struct of one snapshot group, its fields from ``MESSAGE_FIELDS`` (all optional, default None)."""
    fields = [(f.name, f.kind.annotation, None) for f in MESSAGE_FIELDS if f.group == group]
    return msgspec.defstruct(group.capitalize(), fields, module=__name__, omit_defaults=True, gc=False)


if TYPE_CHECKING:  # a checker sees plain structs; their fields are ``lake_schemas.fields.MESSAGE_FIELDS``
    Location: TypeAlias = msgspec.Struct
    Battery: TypeAlias = msgspec.Struct
    Motion: TypeAlias = msgspec.Struct
    Status: TypeAlias = msgspec.Struct
    Diagnostics: TypeAlias = msgspec.Struct
else:
    Location = _group_struct("location")
    Battery = _group_struct("battery")
    Motion = _group_struct("motion")
    Status = _group_struct("status")
    Diagnostics = _group_struct("diagnostics")


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
    float_value: Number = None
    int_value: Optional[Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)]] = None


#: Signal name -> the Silver column it fills.
SIGNAL_COLUMNS: dict[str, str] = {s.name: s.column for s in SIGNALS}
#: Signals whose 0/1 value becomes false/true.
BOOLEAN_SIGNALS = frozenset(s.name for s in SIGNALS if s.boolean)

#: Snapshot group field -> Silver column (where the names differ or nest).
SNAPSHOT_COLUMNS: dict[tuple[str, str], str] = {(f.group, f.name): f.column for f in MESSAGE_FIELDS}


def signal_event_id(did: str, name: str, timestamp_ms: int) -> str:
    """A signal has no id of its own: derive one so a redelivery is the same event."""
    return f"{did}:{name}:{timestamp_ms}"
