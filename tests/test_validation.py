"""The contract's validator: every reject reason, both shapes, and no input makes it raise."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from lake_schemas import ALL_REASONS, Accepted, Refused, RejectReason, validate_message

GOOD = {
    "schema_version": 1, "event_id": "e-1", "vehicle_id": "V000123", "ts": "2026-03-01T08:00:00.250Z",
    "location": {"lat": 52.52, "lon": 13.405}, "battery": {"soc_pct": 81.5, "charging": False},
    "diagnostics": {"odometer_km": 1532.7, "error_codes": ["E12"]},
}


def enc(doc) -> bytes:
    return json.dumps(doc).encode()


def with_(**changes):
    doc = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is ...:
            doc.pop(key)
        else:
            doc[key] = value
    return enc(doc)


@pytest.mark.parametrize("ts, expected_ms", [
    ("2026-03-01T08:00:00.250Z", 1772352000250),
    ("2026-03-01T09:00:00.250+01:00", 1772352000250),
    ("2026-03-01T08:00:00Z", 1772352000000),
    ("2026-03-01t08:00:00.5z", 1772352000500),
    (1772352000250, 1772352000250),
])
def test_snapshot_accepted_with_event_time(ts, expected_ms):
    verdict = validate_message(with_(ts=ts))
    assert verdict == Accepted("V000123", expected_ms, "snapshot")


def test_signal_accepted():
    msg = b'{"did": "1000", "timestamp": 1690000000000, "name": "odometer", "float_value": 123.45}'
    assert validate_message(msg) == Accepted("1000", 1690000000000, "signal")
    msg = b'{"did": "1000", "timestamp": 1690000000200, "name": "soc", "int_value": 88}'
    assert validate_message(msg) == Accepted("1000", 1690000000200, "signal")


def test_unknown_extra_fields_are_kept():
    assert isinstance(validate_message(with_(firmware={"v": [1, 2]})), Accepted)


REJECTS = {
    RejectReason.EMPTY: b"",
    RejectReason.TOO_LARGE: with_(pad="x" * 16_400),
    RejectReason.NOT_UTF8: b'{"event_id": "\xff\xfe"}',
    RejectReason.NOT_JSON: b'{"event_id": "a", "vehicle_id":',
    RejectReason.NOT_OBJECT: b"[1, 2, 3]",
    RejectReason.UNKNOWN_SHAPE: b'{"hello": "world"}',
    RejectReason.UNSUPPORTED_SCHEMA_VERSION: with_(schema_version=7),
    RejectReason.MISSING_FIELD: with_(event_id=...),
    RejectReason.INVALID_EVENT_ID: with_(event_id="x" * 65),
    RejectReason.INVALID_VEHICLE_ID: with_(vehicle_id="V 1"),
    RejectReason.INVALID_TS: with_(ts="2026-03-01T08:00:00"),
    RejectReason.INVALID_VALUE: with_(battery={"soc_pct": "81"}),
    RejectReason.UNKNOWN_SIGNAL: b'{"did": "1000", "timestamp": 1690000000000, "name": "tyre", "float_value": 1}',
    RejectReason.MISSING_SIGNAL_VALUE: b'{"did": "1000", "timestamp": 1690000000000, "name": "soc"}',
}


def test_every_reason_is_covered():
    assert set(REJECTS) == set(RejectReason)
    assert set(ALL_REASONS) == {r.value for r in RejectReason}


@pytest.mark.parametrize("reason", list(RejectReason), ids=lambda r: r.value)
def test_reject_reason(reason):
    verdict = validate_message(REJECTS[reason])
    assert isinstance(verdict, Refused)
    assert verdict.reason == reason, verdict.detail
    assert verdict.detail


@pytest.mark.parametrize("payload", [
    b'{"event_id": "a", "vehicle_id": "V1", "ts": 1772352000000, "battery": {"soc_pct": NaN}}',
    b'{"event_id": "a", "vehicle_id": "V1", "ts": 1772352000000, "battery": {"soc_pct": Infinity}}',
    b'{"event_id": "a", "vehicle_id": "V1", "ts": 1772352000000, "battery": {"soc_pct": 1e400}}',
    b'{"event_id": "a", "vehicle_id": "V1", "ts": 1772352000000, "motion": {"speed_kmh": true}}',
    b'{"event_id": "a", "vehicle_id": "V1", "ts": 1772352000000, "diagnostics": {"error_codes": [1]}}',
    b'{"did": "1000", "timestamp": 1690000000000, "name": "soc", "float_value": "88"}',
    b'{"event_id": "a", "vehicle_id": "V1", "ts": true}',
    b'{"event_id": "a", "vehicle_id": "V1", "ts": 12}',
    b'{"event_id": "a", "vehicle_id": "V1\\n", "ts": 1772352000000}',
    b"null",
])
def test_ill_typed_values_are_refused(payload):
    assert isinstance(validate_message(payload), Refused)


def test_size_boundary_is_exact():
    base = with_(pad="")
    fill = 16 * 1024 - len(base)
    assert isinstance(validate_message(with_(pad="x" * fill)), Accepted)
    assert validate_message(with_(pad="x" * (fill + 1))).reason == RejectReason.TOO_LARGE


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data):
    assert isinstance(validate_message(data), (Accepted, Refused))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
shaped = st.fixed_dictionaries({}, optional={
    "event_id": json_values, "vehicle_id": json_values, "ts": json_values, "schema_version": json_values,
    "location": json_values, "battery": json_values, "did": json_values, "timestamp": json_values,
    "name": json_values, "float_value": json_values, "int_value": json_values,
})


@settings(max_examples=400, deadline=None)
@given(shaped)
def test_arbitrary_json_objects_never_raise(doc):
    verdict = validate_message(json.dumps(doc).encode())
    assert isinstance(verdict, (Accepted, Refused))
    if isinstance(verdict, Accepted):
        assert verdict.vehicle_id and 946_684_800_000 <= verdict.event_ts_ms < 4_102_444_800_000
