"""Validation of one raw Kafka message against contract section 1.

``validate_message`` never raises: whatever the bytes, it returns either an
``Accepted`` (the vehicle id and event time Bronze keeps for pruning) or a
``Refused`` with a reason code from ``reasons.RejectReason``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any, Optional, Union

import msgspec

from lake_schemas.messages import (
    MAX_EVENT_ID_CHARS,
    SIGNAL_COLUMNS,
    SNAPSHOT_SCHEMA_VERSIONS,
    VEHICLE_ID_PATTERN,
    Signal,
    Snapshot,
    is_vehicle_id,
)
from lake_schemas.reasons import RejectReason as R
from lake_schemas.topics import MAX_MESSAGE_BYTES

# Event times outside these bounds are typos or garbage, not telemetry.
MIN_EVENT_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_EVENT_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
#: Kafka record timestamps Bronze accepts (contract section 2): from 2000-01-01 to one hour past the ingest's clock.
MIN_RECORD_MS = MIN_EVENT_MS
RECORD_AHEAD_MS = 3_600_000


def record_timestamp_refused(record_ms: int, now_ms: int) -> Optional[str]:
    """Why the Kafka record timestamp ``record_ms`` is out of range on a clock reading ``now_ms``; None if it is not."""
    if record_ms < MIN_RECORD_MS:
        return f"record timestamp {record_ms} ms is before 2000-01-01"
    if record_ms > now_ms + RECORD_AHEAD_MS:
        return f"record timestamp {record_ms} ms is more than 1 h after the ingest's clock ({now_ms} ms)"
    return None


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_ONE_MS = _dt.timedelta(milliseconds=1)
_SNAPSHOT = msgspec.json.Decoder(Snapshot)
_SIGNAL = msgspec.json.Decoder(Signal)
_ERROR_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
# RFC 3339 date-time (section 5.6, with its note's space separator), ASCII
# digits only: ``fromisoformat`` alone also takes ISO week dates, ``+0100``
# offsets and non-ASCII digits.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)


# Structs, not NamedTuples: built once per message, and msgspec builds them in C.
class Accepted(msgspec.Struct, frozen=True, gc=False):
    vehicle_id: str
    event_ts_ms: int
    shape: str  # "snapshot" | "signal"


class Refused(msgspec.Struct, frozen=True, gc=False):
    reason: R
    detail: str
    vehicle_id: Optional[str] = None
    event_ts_ms: Optional[int] = None


Verdict = Union[Accepted, Refused]

# Which reason a type error on a field earns: the required fields have their
# own codes, anything else is an ill-typed optional value.
_FIELD_REASONS = {
    "event_id": R.INVALID_EVENT_ID,
    "vehicle_id": R.INVALID_VEHICLE_ID,
    "did": R.INVALID_VEHICLE_ID,
    "ts": R.INVALID_TS,
    "timestamp": R.INVALID_TS,
    "schema_version": R.UNSUPPORTED_SCHEMA_VERSION,
}


def validate_message(value: Optional[bytes]) -> Verdict:
    """Classify one message; never raises."""
    try:
        return _validate(value)
    except Exception as exc:  # noqa: BLE001 - the contract: a message never stops the pipeline
        return Refused(R.NOT_JSON, f"unexpected validation error: {type(exc).__name__}: {exc}"[:500])


def validate_and_decode(value: Optional[bytes]) -> tuple[Verdict, Any]:
    """``validate_message``, and the decoded ``Snapshot`` or ``Signal`` of an accepted message (else None):
    for a caller that reads the message's values next, one decode instead of two."""
    keep: list = []
    try:
        verdict = _validate(value, keep)
    except Exception as exc:  # noqa: BLE001 - the contract: a message never stops the pipeline
        return Refused(R.NOT_JSON, f"unexpected validation error: {type(exc).__name__}: {exc}"[:500]), None
    return verdict, (keep[0] if keep and isinstance(verdict, Accepted) else None)


def _validate(value: Optional[bytes], keep: Optional[list] = None) -> Verdict:
    if not value:
        return Refused(R.EMPTY, "empty message")
    if len(value) > MAX_MESSAGE_BYTES:
        return Refused(R.TOO_LARGE, f"{len(value)} bytes > {MAX_MESSAGE_BYTES}")
    if not value.isascii():  # the common case is ASCII, and that check is nearly free
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Refused(R.NOT_UTF8, str(exc)[:200])
    return _snapshot(value, keep)


def _type_error(exc: msgspec.ValidationError) -> Refused:
    text = str(exc)
    match = _ERROR_PATH.search(text)
    if match is None:
        return Refused(R.NOT_OBJECT, text)
    path = match.group(1)
    return Refused(_FIELD_REASONS.get(path, R.INVALID_VALUE), text)


def _snapshot(value: bytes, keep: Optional[list] = None) -> Verdict:
    try:
        msg = _SNAPSHOT.decode(value)
    except msgspec.ValidationError as exc:
        return _type_error(exc)
    except msgspec.DecodeError as exc:
        return Refused(R.NOT_JSON, str(exc))
    if msg.event_id is None and msg.vehicle_id is None and msg.ts is None:
        if b'"did"' in value:
            return _signal(value, keep)
        return Refused(
            R.UNKNOWN_SHAPE, "neither a snapshot (event_id, vehicle_id, ts) nor a signal (did, timestamp, name)"
        )
    if msg.event_id is None or msg.vehicle_id is None or msg.ts is None:
        missing = [n for n in ("event_id", "vehicle_id", "ts") if getattr(msg, n) is None]
        return Refused(R.MISSING_FIELD, "missing required field(s): " + ", ".join(missing), msg.vehicle_id)
    vehicle_id = msg.vehicle_id
    if not is_vehicle_id(vehicle_id):
        return Refused(R.INVALID_VEHICLE_ID, f"vehicle_id {vehicle_id[:80]!r} does not match {VEHICLE_ID_PATTERN}")
    if not 0 < len(msg.event_id) <= MAX_EVENT_ID_CHARS:
        return Refused(R.INVALID_EVENT_ID, f"event_id must be 1..{MAX_EVENT_ID_CHARS} characters", vehicle_id)
    if msg.schema_version is not None and msg.schema_version not in SNAPSHOT_SCHEMA_VERSIONS:
        return Refused(R.UNSUPPORTED_SCHEMA_VERSION, f"schema_version {msg.schema_version}", vehicle_id)
    event_ms = msg.ts if isinstance(msg.ts, int) else _rfc3339_ms(msg.ts)
    if event_ms is None:
        return Refused(R.INVALID_TS, f"ts {str(msg.ts)[:80]!r} is not RFC 3339 with an offset or Z", vehicle_id)
    if not MIN_EVENT_MS <= event_ms < MAX_EVENT_MS:
        return Refused(R.INVALID_TS, f"ts {event_ms} ms is outside 2000..2100", vehicle_id)
    if keep is not None:
        keep.append(msg)
    return Accepted(vehicle_id, event_ms, "snapshot")


_SECONDS_CACHE: dict = {}


def _rfc3339_ms(text: str) -> Optional[int]:
    """Epoch ms of an RFC 3339 time, None if it is not one. A time without
    an offset is refused: its zone would be a guess."""
    # Fast path for the canonical form (``2026-03-01T08:00:00.250Z``): a fleet
    # sends thousands of messages per second, so the seconds repeat.
    if len(text) == 24 and text[23] == "Z" and text[19] == "." and text[20:23].isascii() and text[20:23].isdigit():
        seconds = _SECONDS_CACHE.get(text[:19])
        if seconds is None:
            seconds = _rfc3339_ms(text[:19] + "Z")
            if seconds is None:
                return None
            if len(_SECONDS_CACHE) > 100_000:
                _SECONDS_CACHE.clear()
            _SECONDS_CACHE[text[:19]] = seconds
        return seconds + int(text[20:23])
    if _RFC3339.fullmatch(text) is None:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(text.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return (parsed - _EPOCH) // _ONE_MS


def _signal(value: bytes, keep: Optional[list] = None) -> Verdict:
    try:
        msg = _SIGNAL.decode(value)
    except msgspec.ValidationError as exc:
        return _type_error(exc)
    except msgspec.DecodeError as exc:
        return Refused(R.NOT_JSON, str(exc))
    missing = [n for n in ("did", "timestamp", "name") if getattr(msg, n) is None]
    if len(missing) == 3:  # '"did"' was a value, not a key
        return Refused(
            R.UNKNOWN_SHAPE, "neither a snapshot (event_id, vehicle_id, ts) nor a signal (did, timestamp, name)"
        )
    if missing:
        return Refused(R.MISSING_FIELD, "missing required field(s): " + ", ".join(missing), msg.did, msg.timestamp)
    assert msg.did is not None and msg.timestamp is not None and msg.name is not None  # none is missing
    if not is_vehicle_id(msg.did):
        return Refused(R.INVALID_VEHICLE_ID, f"did {msg.did[:80]!r} does not match {VEHICLE_ID_PATTERN}")
    if msg.name not in SIGNAL_COLUMNS:
        return Refused(R.UNKNOWN_SIGNAL, f"unknown signal name {msg.name[:80]!r}", msg.did, msg.timestamp)
    if msg.float_value is None and msg.int_value is None:
        return Refused(R.MISSING_SIGNAL_VALUE, "neither float_value nor int_value", msg.did, msg.timestamp)
    if not MIN_EVENT_MS <= msg.timestamp < MAX_EVENT_MS:
        return Refused(R.INVALID_TS, f"timestamp {msg.timestamp} ms is outside 2000..2100", msg.did)
    if keep is not None:
        keep.append(msg)
    return Accepted(msg.did, msg.timestamp, "signal")


def signal_value(float_value: Optional[float], int_value: Optional[int]) -> Optional[float]:
    """The number a signal carries (float_value wins when both are sent)."""
    if float_value is not None and math.isfinite(float_value):
        return float_value
    return None if int_value is None else float(int_value)


def rfc3339_ms(text: str) -> Optional[int]:
    """Epoch ms of an RFC 3339 time with an offset or ``Z``; None if it is not one."""
    return _rfc3339_ms(text)
