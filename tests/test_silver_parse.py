"""``parse_bronze`` on payloads a compact encoder would not write: line breaks between tokens."""

from __future__ import annotations

import json

import pyarrow as pa

from beam_pipelines.silver.parse import parse_bronze
from lake_schemas import BRONZE_SCHEMA

SNAPSHOT = {
    "schema_version": 1,
    "event_id": "e1",
    "vehicle_id": "V1",
    "ts": 1772352000000,
    "location": {"lat": 52.5, "lon": 13.4},
    "battery": {"soc_pct": 80.0, "charging": False},
    "diagnostics": {"error_codes": ["E12"]},
}
SIGNAL = {"did": "S1", "timestamp": 1772352000200, "name": "soc", "int_value": 88}


def bronze(payloads: list[str]) -> pa.Table:
    n = len(payloads)
    return pa.table(
        {
            "kafka_topic": ["t"] * n,
            "kafka_partition": list(range(n)),
            "kafka_offset": list(range(n)),
            "ingest_ts": [1772352001000] * n,
            "key": ["V1"] * n,
            "payload": payloads,
            "vehicle_id": ["V1"] * n,
            "event_ts": [1772352000000] * n,
        }
    ).cast(BRONZE_SCHEMA)


def parsed_values(payloads: list[str]) -> list[dict]:
    rows = parse_bronze(bronze(payloads), "f.parquet").drop_columns(["payload"]).to_pylist()
    return rows


def test_line_breaks_between_tokens_parse_like_compact_json():
    compact = [json.dumps(SNAPSHOT), json.dumps(SIGNAL)]
    pretty = [json.dumps(SNAPSHOT, indent=2), json.dumps(SIGNAL, indent=1).replace("\n", "\r\n")]
    expected = parsed_values(compact)
    assert parsed_values(pretty) == expected
    assert [r["malformed"] for r in expected] == [False, False]
    assert expected[0]["soc_pct"] == 80.0 and expected[0]["error_codes"] == ["E12"]
    assert expected[1]["soc_pct"] == 88.0 and expected[1]["event_id"] == "S1:soc:1772352000200"


def test_one_pretty_payload_among_compact_ones_and_a_sliced_batch():
    payloads = [json.dumps(SNAPSHOT), json.dumps(SIGNAL, indent=2), json.dumps(SNAPSHOT)]
    table = bronze(payloads)
    whole = parse_bronze(table, "f.parquet").drop_columns(["payload"]).to_pylist()
    assert [r["malformed"] for r in whole] == [False, False, False]
    sliced = parse_bronze(table.slice(1, 2), "f.parquet").drop_columns(["payload"]).to_pylist()
    assert sliced == whole[1:]
