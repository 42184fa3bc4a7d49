"""The contract's validator (section 1): every reject reason, both shapes, and no input makes it raise."""

import datetime as dt
import json
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lake_schemas import ALL_REASONS, MAX_MESSAGE_BYTES, Accepted, Refused, RejectReason, validate_message
from lake_schemas.fields import MESSAGE_FIELDS, Kind
from lake_schemas.messages import SIGNAL_COLUMNS

R = RejectReason
T0 = 1772352000000  # 2026-03-01T08:00:00Z
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

GOOD = {
    "schema_version": 1,
    "event_id": "e-1",
    "vehicle_id": "V000123",
    "ts": "2026-03-01T08:00:00.250Z",
    "location": {"lat": 52.52, "lon": 13.405, "alt_m": 34.0, "accuracy_m": 4.5},
    "battery": {"soc_pct": 81.5, "voltage_v": 48.1, "current_a": -3.2, "temp_c": 24.0, "charging": False},
    "motion": {"speed_kmh": 17.2, "heading_deg": 270.0, "accel_ms2": 0.3},
    "status": {"locked": False, "in_use": True, "ignition": True, "trip_id": "T-88"},
    "diagnostics": {"odometer_km": 1532.7, "error_codes": ["E12"]},
}


def raw(literal: str) -> str:
    """A JSON literal Python cannot write (``1e400``), placed as is by ``enc``."""
    return f"@RAW:{literal}@"


def enc(doc) -> bytes:
    return re.sub(r'"@RAW:([^@]*)@"', r"\1", json.dumps(doc, ensure_ascii=False)).encode()


def with_(**changes) -> bytes:
    """GOOD with fields replaced; ``...`` removes one."""
    doc = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is ...:
            doc.pop(key)
        else:
            doc[key] = value
    return enc(doc)


def sig(**fields) -> bytes:
    doc = {"did": "1000", "timestamp": 1690000000000, "name": "soc", "int_value": 88}
    for key, value in fields.items():
        if value is ...:
            doc.pop(key)
        else:
            doc[key] = value
    return enc(doc)


# -- accepted ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ts, expected_ms",
    [
        ("2026-03-01T08:00:00.250Z", T0 + 250),
        ("2026-03-01T08:00:00Z", T0),
        ("2026-03-01T08:00:00.5Z", T0 + 500),
        ("2026-03-01T08:00:00.123456Z", T0 + 123),
        ("2026-03-01t08:00:00.5z", T0 + 500),  # RFC 3339 allows lower-case T and Z
        ("2026-03-01T09:00:00.250+01:00", T0 + 250),
        ("2026-03-01T03:30:00-04:30", T0),
        ("2026-03-01T12:00:00+14:00", T0 - 10 * 3_600_000),
        ("2026-03-01T08:00:00+00:00", T0),
        ("2026-03-01T08:00:00-00:00", T0),
        ("2026-02-28T23:59:59.999-08:00", T0 - 1),
        (T0 + 250, T0 + 250),  # epoch milliseconds
        (946_684_800_000, 946_684_800_000),  # the earliest accepted instant
    ],
)
def test_snapshot_accepted_with_vehicle_and_event_time(ts, expected_ms):
    assert validate_message(with_(ts=ts)) == Accepted("V000123", expected_ms, "snapshot")


def test_snapshot_minimal_with_null_groups_and_fields():
    msg = {
        "event_id": "x",
        "vehicle_id": "a_B-9",
        "ts": T0,
        "schema_version": None,
        "location": None,
        "battery": {"soc_pct": None, "charging": None},
        "motion": {},
        "status": {"trip_id": None},
        "diagnostics": {"error_codes": None},
    }
    assert validate_message(enc(msg)) == Accepted("a_B-9", T0, "snapshot")


def test_snapshot_of_the_contract_example_and_unknown_extra_fields():
    assert validate_message(with_()) == Accepted("V000123", T0 + 250, "snapshot")
    assert validate_message(with_(firmware={"v": [1, 2]}, extra=None)) == Accepted("V000123", T0 + 250, "snapshot")
    assert validate_message(with_(vehicle_id="V" * 64, event_id="e" * 64)).vehicle_id == "V" * 64


@pytest.mark.parametrize("name", sorted(SIGNAL_COLUMNS))
@pytest.mark.parametrize("value", [{"float_value": 123.45}, {"int_value": 1}, {"float_value": 0.5, "int_value": 1}])
def test_signal_accepted_for_every_name(name, value):
    msg = enc({"did": "1000", "timestamp": 1690000000200, "name": name, **value})
    assert validate_message(msg) == Accepted("1000", 1690000000200, "signal")


def test_signal_examples_of_the_contract():
    assert validate_message(
        b'{"did": "1000", "timestamp": 1690000000000, "name": "odometer", "float_value": 123.45}'
    ) == Accepted("1000", 1690000000000, "signal")
    assert validate_message(b'{"did": "1000", "timestamp": 1690000000200, "name": "soc", "int_value": 88}') == Accepted(
        "1000", 1690000000200, "signal"
    )
    assert validate_message(sig(unit="km", int_value=None, float_value=1.0)) == Accepted(
        "1000", 1690000000000, "signal"
    )


# -- refused: every reason, with the exact reason ---------------------------

REJECTS = [
    (R.EMPTY, b""),
    (R.EMPTY, None),  # a Kafka tombstone
    (R.TOO_LARGE, with_(pad="x" * MAX_MESSAGE_BYTES)),
    (R.TOO_LARGE, b"x" * (MAX_MESSAGE_BYTES + 1)),  # size is checked before anything else
    (R.NOT_UTF8, b'{"event_id": "\xff\xfe"}'),
    (R.NOT_UTF8, b'{"event_id": "a", "vehicle_id": "V1", "ts": 1772352000000, "x": "\xc3\x28"}'),
    (R.NOT_JSON, b'{"event_id": "a", "vehicle_id":'),  # truncated
    (R.NOT_JSON, with_()[:-1]),
    (R.NOT_JSON, b"not json"),
    (R.NOT_JSON, b"   "),
    (R.NOT_JSON, b"{'vehicle_id': 'V1', 'ts': 1772352000000}"),
    (R.NOT_JSON, with_() + b" trailing"),
    (R.NOT_JSON, b"\xef\xbb\xbf" + with_()),  # a byte-order mark
    (R.NOT_OBJECT, b"[1, 2, 3]"),
    (R.NOT_OBJECT, b'"a string"'),
    (R.NOT_OBJECT, b"42"),
    (R.NOT_OBJECT, b"null"),
    (R.NOT_OBJECT, b"true"),
    (R.UNKNOWN_SHAPE, b'{"hello": "world"}'),
    (R.UNKNOWN_SHAPE, b"{}"),
    (R.UNKNOWN_SHAPE, b'{"hello": "did"}'),  # "did" as a value is not a signal
    (R.UNSUPPORTED_SCHEMA_VERSION, with_(schema_version=7)),
    (R.UNSUPPORTED_SCHEMA_VERSION, with_(schema_version="1")),
    (R.MISSING_FIELD, with_(event_id=...)),
    (R.MISSING_FIELD, with_(vehicle_id=...)),
    (R.MISSING_FIELD, with_(ts=...)),
    (R.MISSING_FIELD, with_(vehicle_id=None)),
    (R.MISSING_FIELD, sig(timestamp=...)),
    (R.MISSING_FIELD, sig(name=...)),
    (R.MISSING_FIELD, sig(did=None)),
    (R.INVALID_EVENT_ID, with_(event_id="x" * 65)),
    (R.INVALID_EVENT_ID, with_(event_id="")),
    (R.INVALID_EVENT_ID, with_(event_id=5)),
    (R.INVALID_VEHICLE_ID, with_(vehicle_id="V 1")),
    (R.INVALID_VEHICLE_ID, with_(vehicle_id="")),
    (R.INVALID_VEHICLE_ID, with_(vehicle_id="V" * 65)),
    (R.INVALID_VEHICLE_ID, with_(vehicle_id="V1\n")),
    (R.INVALID_VEHICLE_ID, with_(vehicle_id="Vé1")),
    (R.INVALID_VEHICLE_ID, with_(vehicle_id=123)),
    (R.INVALID_VEHICLE_ID, sig(did="10 00")),
    (R.INVALID_VEHICLE_ID, sig(did=1000)),
    (R.INVALID_TS, with_(ts="2026-03-01T08:00:00")),  # no offset: its zone would be a guess
    (R.INVALID_TS, with_(ts="2026-03-01T08:00:00.250")),
    (R.INVALID_TS, with_(ts="2026-03-01")),
    (R.INVALID_TS, with_(ts="yesterday")),
    (R.INVALID_TS, with_(ts="2026-02-30T08:00:00Z")),
    (R.INVALID_TS, with_(ts="2026-03-01T25:00:00Z")),
    (R.INVALID_TS, with_(ts="20260301T080000Z")),
    (R.INVALID_TS, with_(ts="2026-W09-7T08:00:00Z")),  # ISO 8601 week date: not RFC 3339
    (R.INVALID_TS, with_(ts="2026-03-01T08:00:00+0100")),  # RFC 3339 offsets have a colon
    (R.INVALID_TS, with_(ts="2026-03-01T08:00:00.\u0661\u0662\u0663Z")),  # Arabic-Indic digits
    (R.INVALID_TS, with_(ts="2026-03-01T08:00:00.\u00b2\u00b2\u00b2Z")),  # superscript digits
    (R.INVALID_TS, with_(ts=12)),  # 1970: outside 2000..2100
    (R.INVALID_TS, with_(ts=-5)),
    (R.INVALID_TS, with_(ts=99999999999999999999999)),
    (R.INVALID_TS, with_(ts=1772352000000.5)),
    (R.INVALID_TS, with_(ts=True)),
    (R.INVALID_TS, with_(ts="1999-12-31T23:59:59.999Z")),
    (R.INVALID_TS, sig(timestamp="1690000000000")),
    (R.INVALID_TS, sig(timestamp=1690000000000.5)),
    (R.INVALID_TS, sig(timestamp=True)),
    (R.INVALID_TS, sig(timestamp=5)),
    (R.INVALID_VALUE, with_(battery={"soc_pct": "81"})),
    (R.INVALID_VALUE, with_(battery={"soc_pct": raw("1e400")})),
    (R.INVALID_VALUE, with_(battery={"soc_pct": raw("-1e400")})),
    (R.INVALID_VALUE, with_(motion={"speed_kmh": True})),
    (R.INVALID_VALUE, with_(battery={"charging": 1})),
    (R.INVALID_VALUE, with_(status={"trip_id": 88})),
    (R.INVALID_VALUE, with_(diagnostics={"error_codes": [1]})),
    (R.INVALID_VALUE, with_(diagnostics={"error_codes": "E12"})),
    (R.INVALID_VALUE, with_(location=[52.5, 13.4])),
    (R.INVALID_VALUE, with_(location="52.5,13.4")),
    (R.INVALID_VALUE, sig(float_value="88", int_value=...)),
    (R.INVALID_VALUE, sig(float_value=raw("1e400"), int_value=...)),
    (R.INVALID_VALUE, sig(int_value=True)),
    (R.INVALID_VALUE, sig(int_value=1.5)),
    (R.INVALID_VALUE, sig(int_value=2**60)),
    (R.UNKNOWN_SIGNAL, sig(name="tyre")),
    (R.UNKNOWN_SIGNAL, sig(name="")),
    (R.UNKNOWN_SIGNAL, sig(name="SOC")),
    (R.MISSING_SIGNAL_VALUE, sig(int_value=...)),
    (R.MISSING_SIGNAL_VALUE, sig(int_value=None, float_value=None)),
]


#: Reasons of the record, not of its payload alone: the ingest gives the first (tests/test_ingest_hostile.py),
#: the MQTT bridge the second, comparing the payload with its topic (tests/test_bridge.py).
RECORD_REASONS = {RejectReason.RECORD_TIMESTAMP_OUT_OF_RANGE, RejectReason.VEHICLE_MISMATCH}


def test_every_reason_is_produced_by_some_message():
    assert {reason for reason, _ in REJECTS} == set(RejectReason) - RECORD_REASONS
    assert set(ALL_REASONS) == {r.value for r in RejectReason}


def test_a_record_timestamp_out_of_range_refuses_any_payload_and_keeps_what_it_names():
    from beam_pipelines.ingest.batches import KafkaBatch, validate_batch

    now = 1_772_352_000_000
    good = b'{"event_id":"e","vehicle_id":"V1","ts":1772352000000}'
    stamps = [946_684_799_999, 946_684_800_000, now + 3_600_000, now + 3_600_001, -1, 2**63 - 1]
    batch = KafkaBatch("t", 0, list(range(len(stamps))), stamps, [None] * len(stamps), [good] * len(stamps))
    validated = validate_batch(batch, now_ms=now)
    assert validated.bronze["kafka_offset"].to_pylist() == [1, 2]
    rejects = validated.rejects.to_pylist()
    assert [r["kafka_offset"] for r in rejects] == [0, 3, 4, 5]
    assert {r["reason"] for r in rejects} == {"record_timestamp_out_of_range"}
    assert all(r["vehicle_id"] == "V1" for r in rejects)  # what the payload names is kept (lake forget finds it)


@pytest.mark.parametrize("reason, payload", REJECTS, ids=[f"{r.value}-{i}" for i, (r, _) in enumerate(REJECTS)])
def test_refused_with_the_exact_reason(reason, payload):
    verdict = validate_message(payload)
    assert isinstance(verdict, Refused), verdict
    assert verdict.reason == reason, verdict.detail
    assert verdict.detail and not verdict.detail.startswith("unexpected validation error")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"])
@pytest.mark.parametrize("shape", ["snapshot", "signal"])
def test_nan_and_infinity_literals_are_not_json(literal, shape):
    if shape == "snapshot":
        payload = b'{"event_id": "a", "vehicle_id": "V1", "ts": 1772352000000, "battery": {"soc_pct": %s}}' % literal
    else:
        payload = b'{"did": "1000", "timestamp": 1690000000000, "name": "soc", "float_value": %s}' % literal
    assert validate_message(payload).reason == R.NOT_JSON


@pytest.mark.parametrize("group, field", [(f.group, f.name) for f in MESSAGE_FIELDS if f.kind is Kind.NUMBER])
@pytest.mark.parametrize("bad", ["12.5", True, False, [1.0], {"v": 1}, raw("1e400"), raw("-1e400"), raw("1e16")])
def test_every_number_field_refuses_strings_bools_and_overflow(group, field, bad):
    verdict = validate_message(with_(**{group: {field: bad}}))
    assert verdict.reason == R.INVALID_VALUE, verdict
    assert f"$.{group}.{field}" in verdict.detail  # the detail names the field


def test_size_boundary_is_exact():
    base = with_(pad="")
    fill = MAX_MESSAGE_BYTES - len(base)
    at_limit, over = with_(pad="x" * fill), with_(pad="x" * (fill + 1))
    assert (len(at_limit), len(over)) == (16384, 16385)
    assert validate_message(at_limit) == Accepted("V000123", T0 + 250, "snapshot")
    assert validate_message(over).reason == R.TOO_LARGE
    # multi-byte characters: the limit is in bytes, not characters
    two_byte = with_(pad="é" * (fill // 2))
    assert len(two_byte) <= 16384 and isinstance(validate_message(two_byte), Accepted)
    assert validate_message(with_(pad="é" * (fill // 2 + 1))).reason == R.TOO_LARGE


def test_refusal_keeps_what_was_parsed_for_pruning():
    verdict = validate_message(sig(name="tyre"))
    assert (verdict.vehicle_id, verdict.event_ts_ms) == ("1000", 1690000000000)
    assert validate_message(with_(ts="nope")).vehicle_id == "V000123"


# -- properties -------------------------------------------------------------


def _sound(verdict) -> None:
    """A verdict is Accepted or Refused, never the catch-all for an internal error."""
    assert isinstance(verdict, (Accepted, Refused))
    if isinstance(verdict, Refused):
        assert isinstance(verdict.reason, RejectReason)
        assert not verdict.detail.startswith("unexpected validation error"), verdict.detail
    else:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", verdict.vehicle_id)
        assert 946_684_800_000 <= verdict.event_ts_ms < 4_102_444_800_000
        assert verdict.shape in ("snapshot", "signal")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data):
    _sound(validate_message(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 600))
def test_arbitrary_bytes_spliced_into_a_good_message_never_raise(junk, at):
    good = with_()
    _sound(validate_message(good[:at] + junk + good[at:]))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["V1", "did", "2026-03-01T08:00:00Z", "soc", "odometer", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        key: json_values
        for key in (
            "event_id",
            "vehicle_id",
            "ts",
            "schema_version",
            "location",
            "battery",
            "motion",
            "status",
            "diagnostics",
            "did",
            "timestamp",
            "name",
            "float_value",
            "int_value",
        )
    },
).flatmap(lambda doc: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(lambda x: {**x, **doc}))


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(shaped)
def test_arbitrary_json_objects_never_raise(doc):
    payload = json.dumps(doc).encode()  # NaN/Infinity floats become the literals JSON does not have
    verdict = validate_message(payload)
    _sound(verdict)
    if isinstance(verdict, Accepted):
        if verdict.shape == "snapshot":
            assert verdict.vehicle_id == doc["vehicle_id"]
        else:
            assert (verdict.vehicle_id, verdict.event_ts_ms) == (doc["did"], doc["timestamp"])


offsets = st.integers(-23 * 60, 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
instants = st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2099, 12, 30), timezones=offsets)


def _rfc3339(t: dt.datetime, digits: int, upper: bool, z: bool) -> str:
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{t.microsecond:06d}{'0' * 3}"[:digits]
    off = t.utcoffset()
    if z and off == dt.timedelta(0):
        text += "Z"
    else:
        minutes = int(off.total_seconds() // 60)
        text += f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text if upper else text.lower()


@settings(max_examples=300, deadline=None)
@given(instants, st.integers(0, 9), st.booleans(), st.booleans(), st.booleans())
def test_rfc3339_times_give_the_exact_instant(t, digits, upper, z, as_signal_ms):
    micros = int(f"{t.microsecond:06d}{'0' * 3}"[:digits].ljust(6, "0")[:6]) if digits else 0
    t = t.replace(microsecond=micros)
    expected = (t - EPOCH) // dt.timedelta(milliseconds=1)
    if as_signal_ms:
        assert validate_message(sig(timestamp=expected)) == Accepted("1000", expected, "signal")
    assert validate_message(with_(ts=_rfc3339(t, digits, upper, z))) == Accepted("V000123", expected, "snapshot")


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["2026-03-01T08:00:00.250Z", "2026-03-01T09:00:00+01:00", "2026-03-01T08:00:00Z"]), st.data())
def test_a_mangled_time_is_refused_as_invalid_ts_or_read_exactly(canonical, data):
    """Replace, insert or delete one character of a good time: the verdict is
    ``invalid_ts`` unless the result is still RFC 3339 (then its instant)."""
    i = data.draw(st.integers(0, len(canonical) - 1))
    ch = data.draw(st.characters(codec="utf-8"))
    op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    text = {
        "replace": canonical[:i] + ch + canonical[i + 1 :],
        "insert": canonical[:i] + ch + canonical[i:],
        "delete": canonical[:i] + canonical[i + 1 :],
    }[op]
    assume(text != canonical)
    verdict = validate_message(with_(ts=text))
    _sound(verdict)
    reference = None
    if _RFC3339.fullmatch(text):
        try:
            reference = dt.datetime.fromisoformat(text.upper())
        except ValueError:
            reference = None
    if reference is None or not dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc) <= reference < dt.datetime(
        2100, 1, 1, tzinfo=dt.timezone.utc
    ):
        assert isinstance(verdict, Refused) and verdict.reason == R.INVALID_TS, (text, verdict)
    else:
        expected = (reference - EPOCH) // dt.timedelta(milliseconds=1)
        assert verdict == Accepted("V000123", expected, "snapshot"), text
