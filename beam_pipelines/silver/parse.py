"""Bronze rows -> Silver columns, on whole Arrow tables.

The payloads of a Bronze file are joined into one newline-delimited JSON
buffer and parsed by Arrow's multithreaded JSON reader with one explicit
schema that covers both shapes (unknown fields are ignored, as the contract
says). A buffer Arrow refuses is parsed again row by row, and the rows that
still fail are marked ``malformed``; nothing here builds one Python object
per row on the normal path.

The result (``PARSED_SCHEMA``) has the Silver columns that come from the
message, plus what the later steps need: the sender time, the signal name,
the Bronze coordinates of the row, and its payload where the row may end in
quarantine.
"""

from __future__ import annotations

from typing import Any, Optional

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from lake_schemas.messages import BOOLEAN_SIGNALS, SIGNAL_COLUMNS, SNAPSHOT_COLUMNS, SNAPSHOT_SCHEMA_VERSIONS
from lake_schemas.rules import boolean_signal, quarantine_reasons
from lake_schemas.tables import MEASUREMENT_FIELDS, TS
from lake_schemas.validation import rfc3339_ms

__all__ = ["PAYLOAD_SCHEMA", "PARSED_SCHEMA", "parse_bronze"]

_F64, _BOOL, _STR = pa.float64(), pa.bool_(), pa.string()
_MEASUREMENT_TYPES = {f.name: f.type for f in MEASUREMENT_FIELDS}


def _group(name: str) -> pa.Field:
    fields = [pa.field(f, _MEASUREMENT_TYPES[col]) for (g, f), col in SNAPSHOT_COLUMNS.items() if g == name]
    return pa.field(name, pa.struct(fields))


#: Both message shapes as one JSON schema (``ts`` is left out: it is a string
#: or a number, and Bronze's ``event_ts`` already holds it parsed).
PAYLOAD_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int64()),
        pa.field("event_id", _STR),
        pa.field("vehicle_id", _STR),
        *(_group(g) for g in ("location", "battery", "motion", "status", "diagnostics")),
        pa.field("did", _STR),
        pa.field("timestamp", pa.int64()),
        pa.field("name", _STR),
        pa.field("float_value", _F64),
        pa.field("int_value", pa.int64()),
    ]
)

#: What ``parse_bronze`` returns.
PARSED_SCHEMA = pa.schema(
    [
        pa.field("vehicle_id", _STR),
        pa.field("event_id", _STR),
        pa.field("raw_event_ts", TS),  # the sender's time, before rule 1
        pa.field("ingest_ts", TS, nullable=False),
        pa.field("source_shape", _STR),
        *MEASUREMENT_FIELDS,
        pa.field("schema_version", pa.int32()),
        pa.field("kafka_topic", _STR),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("signal_name", _STR),  # null for snapshots
        pa.field("malformed", _BOOL, nullable=False),
        pa.field("payload", _STR),  # only on rows that may be quarantined
        pa.field("bronze_file", _STR, nullable=False),
    ]
)

# Blocks are parsed in parallel: a Bronze file of ~12 MB of JSON in 2 MB blocks keeps
# every core busy to the end (8 MB blocks: about a third slower on 2 cores, measured).
# A message is at most 16 KiB, so any block holds whole lines.
_READ_OPTIONS = pj.ReadOptions(block_size=2 << 20)
_PARSE_OPTIONS = pj.ParseOptions(explicit_schema=PAYLOAD_SCHEMA, unexpected_field_behavior="ignore")


def _value_buffer(strings: pa.Array) -> pa.Buffer:
    """The characters of every value of a string array, back to back (zero-copy)."""
    if len(strings) == 0:
        return pa.py_buffer(b"")
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    return strings.buffers()[2].slice(start, end - start) if end > start else pa.py_buffer(b"")


def _ndjson(payload: pa.Array) -> pa.Buffer:
    """The payloads as one newline-delimited buffer (zero-copy from the joined array)."""
    # A raw newline cannot occur inside a JSON string, so replacing line breaks
    # by spaces only touches insignificant whitespace between tokens. (bytes.find
    # looks for them some 20 times faster than a regex kernel over the array.)
    text = _value_buffer(payload).to_pybytes()
    if text.find(b"\n") >= 0 or text.find(b"\r") >= 0:
        payload = pc.replace_substring_regex(payload, "[\r\n]", " ")
    lines = pc.binary_join_element_wise(payload, pa.scalar("\n"), "")
    return _value_buffer(lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines)


def _read_json(payload: pa.Array) -> Optional[pa.Table]:
    """All payloads parsed at once, or None when Arrow refuses any of them."""
    try:
        table = pj.read_json(
            pa.BufferReader(_ndjson(payload)), read_options=_READ_OPTIONS, parse_options=_PARSE_OPTIONS
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(payload) else None


def _read_json_row_by_row(payload: pa.Array) -> tuple[pa.Table, pa.Array]:
    """The slow path: each payload on its own; a row Arrow cannot read is all nulls and ``malformed``."""
    rows, bad = [], []
    empty = PAYLOAD_SCHEMA.empty_table()
    for text in payload.to_pylist():
        one = _read_json(pa.array([text], _STR)) if text and text.lstrip().startswith("{") else None
        bad.append(one is None)
        rows.append(one if one is not None else pa.Table.from_pylist([{}], schema=PAYLOAD_SCHEMA))
    table = pa.concat_tables(rows) if rows else empty
    return table, pa.array(bad, _BOOL)


def _signal_value(msg: pa.Table) -> pa.Array:
    """The number a signal carries: ``float_value`` when finite, else ``int_value``."""
    f = msg["float_value"]
    finite = pc.and_kleene(pc.is_valid(f), pc.invert(pc.is_nan(f)))
    return pc.if_else(finite, f, pc.cast(msg["int_value"], _F64))


def _snapshot_times(payload: pa.Array, need: pa.Array) -> pa.Array:
    """Sender times of snapshots whose Bronze ``event_ts`` is missing (older or hand-made Bronze)."""
    out = []
    decode = msgspec.json.Decoder(dict).decode
    for text, needed in zip(payload.to_pylist(), need.to_pylist()):
        ts = None
        if needed:
            try:
                value = decode(text).get("ts")
                ts = value if isinstance(value, int) else rfc3339_ms(value) if isinstance(value, str) else None
            except (msgspec.DecodeError, AttributeError):
                ts = None
        out.append(ts)
    return pa.array(out, pa.int64())


def parse_bronze(bronze: pa.Table, bronze_file: str) -> pa.Table:
    """Parse one Bronze table (``BRONZE_SCHEMA``) into ``PARSED_SCHEMA`` rows, in the same order."""
    n = bronze.num_rows
    payload = bronze["payload"].combine_chunks()
    msg = _read_json(payload)
    if msg is not None:
        malformed = pa.array([False] * n, _BOOL) if n else pa.array([], _BOOL)
    else:
        msg, malformed = _read_json_row_by_row(payload)

    is_snapshot = pc.is_valid(msg["event_id"])
    value = _signal_value(msg)
    name = msg["name"]
    is_signal = pc.and_(
        pc.invert(is_snapshot),
        pc.and_(
            pc.is_in(name, value_set=pa.array(list(SIGNAL_COLUMNS), _STR)).fill_null(False),
            pc.and_(pc.is_valid(msg["did"]), pc.is_valid(value)),
        ),
    )
    malformed = pc.or_(malformed, pc.invert(pc.or_(is_snapshot, is_signal)))

    columns = {}
    for (group, field_name), column in SNAPSHOT_COLUMNS.items():
        columns[column] = pc.if_else(
            is_snapshot, pc.struct_field(msg[group], field_name), pa.nulls(n, _MEASUREMENT_TYPES[column])
        )
    for signal, column in SIGNAL_COLUMNS.items():
        hit = pc.and_(is_signal, pc.equal(name, signal).fill_null(False))
        signal_value = boolean_signal(value) if signal in BOOLEAN_SIGNALS else value
        columns[column] = pc.if_else(hit, signal_value, columns[column])

    bronze_vehicle = bronze["vehicle_id"]
    vehicle_id = pc.coalesce(pc.if_else(is_snapshot, msg["vehicle_id"], msg["did"]), bronze_vehicle)
    signal_id = pc.binary_join_element_wise(msg["did"], name, pc.cast(msg["timestamp"], _STR), ":")
    event_id = pc.if_else(is_snapshot, msg["event_id"], pc.if_else(is_signal, signal_id, pa.nulls(n, _STR)))

    signal_ms = pc.if_else(is_signal, msg["timestamp"], pa.scalar(None, pa.int64()))
    raw_ms = pc.coalesce(pc.cast(bronze["event_ts"], pa.int64()), signal_ms)
    missing = pc.and_(pc.is_null(raw_ms), is_snapshot)
    if pc.any(missing).as_py():
        raw_ms = pc.coalesce(raw_ms, _snapshot_times(payload, missing))
    malformed = pc.or_(malformed, pc.is_null(raw_ms))

    version = pc.if_else(
        is_snapshot, pc.coalesce(msg["schema_version"], min(SNAPSHOT_SCHEMA_VERSIONS)), pa.scalar(None, pa.int64())
    )
    shape = pc.if_else(is_snapshot, "snapshot", pc.if_else(is_signal, "signal", pa.nulls(n, _STR)))
    arrays = {
        "vehicle_id": vehicle_id,
        "event_id": event_id,
        "raw_event_ts": pc.cast(raw_ms, TS),
        "ingest_ts": bronze["ingest_ts"],
        "source_shape": shape,
        **columns,
        "schema_version": pc.cast(version, pa.int32()),
        "kafka_topic": bronze["kafka_topic"],
        "kafka_partition": bronze["kafka_partition"],
        "kafka_offset": bronze["kafka_offset"],
        "signal_name": pc.if_else(is_signal, name, pa.nulls(n, _STR)),
        "malformed": malformed,
        "payload": None,
        "bronze_file": pa.array([bronze_file] * n, _STR) if n else pa.array([], _STR),
    }
    # Keep the payload only where a row may end in quarantine (which shows it): a row the
    # rules refuse on its own, a lat or lon signal before pairing, a malformed row. The
    # rest of the batch then carries no JSON text through the shuffle.
    probe = pa.table({c: columns[c] for c in ("lat", "lon", "soc_pct", "speed_kmh")})
    at_risk = pc.or_(pc.is_valid(quarantine_reasons(probe)), malformed)
    keep = np.asarray(at_risk.to_numpy(zero_copy_only=False), dtype=bool)
    index = np.arange(n, dtype=np.int64)
    arrays["payload"] = payload.take(pa.array(index, mask=~keep))  # if_else would copy every payload
    return pa.table([_array(arrays[f.name]) for f in PARSED_SCHEMA], schema=PARSED_SCHEMA)


def _array(values: Any) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
