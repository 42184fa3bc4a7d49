"""The gateway's OpenAPI 3.1 document (``GET /openapi.json``).

The message schemas come from the contract's own structs
(``lake_schemas.messages``), with the required fields, the vehicle id
pattern and the signal names of contract section 1 added: the structs keep
their required fields optional so that a missing one is reported by name.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from lake_schemas.messages import MAX_EVENT_ID_CHARS, SIGNAL_COLUMNS, VEHICLE_ID_PATTERN, Signal, Snapshot
from lake_schemas.reasons import ALL_REASONS
from lake_schemas.topics import MAX_MESSAGE_BYTES
from lake_schemas.validation import MAX_EVENT_MS, MIN_EVENT_MS

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"


def _message_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components([Snapshot, Signal], ref_template=_REF)
    components = copy.deepcopy(components)
    vehicle_id = {"type": "string", "pattern": VEHICLE_ID_PATTERN}
    epoch_ms = {
        "type": "integer",
        "minimum": MIN_EVENT_MS,
        "maximum": MAX_EVENT_MS - 1,
        "description": "epoch milliseconds",
    }
    snapshot = components["Snapshot"]
    snapshot["description"] = "Contract section 1a: a snapshot (schema_version 1). Unknown extra fields are kept."
    snapshot["properties"].update(
        event_id={"type": "string", "minLength": 1, "maxLength": MAX_EVENT_ID_CHARS},
        vehicle_id={**vehicle_id, "description": "must be the vehicle the bearer secret belongs to"},
        ts={
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "RFC 3339 with an offset or Z"},
                epoch_ms,
            ]
        },
        schema_version={"anyOf": [{"type": "integer", "enum": [1]}, {"type": "null"}]},
    )
    snapshot["required"] = ["event_id", "vehicle_id", "ts"]
    signal = components["Signal"]
    signal["description"] = "Contract section 1b: one signal of a fragmented TCU event; `did` is the vehicle."
    signal["properties"].update(
        did={**vehicle_id, "description": "the vehicle id: must be the bearer secret's vehicle"},
        timestamp=epoch_ms,
        name={"type": "string", "enum": sorted(SIGNAL_COLUMNS)},
    )
    signal["required"] = ["did", "timestamp", "name"]
    signal["anyOf"] = [  # a value is required: float_value or int_value, not null
        {"required": ["float_value"], "properties": {"float_value": {"type": "number"}}},
        {"required": ["int_value"], "properties": {"int_value": {"type": "integer"}}},
    ]
    components["Message"] = {
        "description": f"One telemetry message, at most {MAX_MESSAGE_BYTES:,} bytes of UTF-8 JSON.",
        "anyOf": [{"$ref": _REF.format(name="Snapshot")}, {"$ref": _REF.format(name="Signal")}],
    }
    return components


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="Problem")}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before sending again", "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": 'Bearer realm="lake"', "schema": {"type": "string"}}}


def openapi_document(max_body_bytes: int, max_messages: int, rate: float, burst: float) -> dict[str, Any]:
    schemas = _message_schemas()
    schemas["Accepted"] = {
        "type": "object",
        "properties": {"accepted": {"type": "integer", "minimum": 1}},
        "required": ["accepted"],
    }
    schemas["LineError"] = {
        "type": "object",
        "properties": {
            "line": {"type": "integer", "minimum": 1, "description": "1-based line of the body (1 for JSON)"},
            "reason": {"type": "string", "enum": [*ALL_REASONS, "vehicle_mismatch"]},
            "detail": {"type": "string"},
        },
        "required": ["line", "reason", "detail"],
    }
    schemas["Problem"] = {
        "type": "object",
        "properties": {
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"$ref": _REF.format(name="LineError")}},
        },
        "required": ["detail"],
    }
    schemas["Health"] = {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]}, "detail": {"type": "string"}},
        "required": ["status"],
    }
    telemetry = {
        "summary": "Send telemetry: one message, or up to a thousand as NDJSON",
        "description": (
            "Every message is checked with the validation Bronze applies (contract section 1) and must be the "
            "bearer's own vehicle (`vehicle_id`, or `did` for a signal). A request is all or nothing: 202 only "
            "once Kafka acknowledged every message (keyed by the vehicle id, the arrival time as record "
            "timestamp, the bytes as sent); any refusal forwards nothing. Empty NDJSON lines are skipped "
            "(line numbers count them); a line may end in CRLF."
        ),
        "operationId": "sendTelemetry",
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(name="Message")}},
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": f"one message per line, at most {max_messages:,} lines "
                        f"and {max_body_bytes:,} bytes",
                    }
                },
            },
        },
        "responses": {
            "202": {
                "description": "Kafka acknowledged every message",
                "content": {"application/json": {"schema": {"$ref": _REF.format(name="Accepted")}}},
            },
            "400": _problem("a message is invalid: `errors` names each bad line and its reason; nothing forwarded"),
            "401": _problem("no bearer secret, or one that is wrong, unknown or revoked", _WWW_AUTHENTICATE),
            "403": _problem("a message is for another vehicle (`errors` names the lines); nothing forwarded"),
            "413": _problem(
                f"the body is over {max_body_bytes:,} bytes (NDJSON) or {MAX_MESSAGE_BYTES:,} bytes (JSON), "
                f"holds over {max_messages:,} messages, or more than the device's burst"
            ),
            "415": _problem("the Content-Type is not application/json or application/x-ndjson, or it is encoded"),
            "429": _problem(
                f"the device is over its rate ({rate:g} messages/s sustained, bursts of {burst:g}), or its "
                "address over its budget of failed authentications",
                _RETRY_AFTER,
            ),
            "503": _problem("Kafka did not acknowledge in time, or the gateway is busy: send again", _RETRY_AFTER),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Telemetry lake HTTP gateway",
            "version": "1",
            "description": "Devices send telemetry into the lake's Kafka topic (contract section 8).",
        },
        "paths": {
            "/v1/telemetry": {"post": telemetry},
            "/healthz": {
                "get": {
                    "summary": "Is Kafka reachable (and the topic there)?",
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "ready",
                            "content": {"application/json": {"schema": {"$ref": _REF.format(name="Health")}}},
                        },
                        "503": {
                            "description": "Kafka unreachable or the topic missing",
                            "content": {"application/json": {"schema": {"$ref": _REF.format(name="Health")}}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text format 0.0.4)",
                    "operationId": "metrics",
                    "responses": {
                        "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the device's secret, as `lake devices add` printed it (lk1.<vehicle_id>.<random>)",
                }
            },
        },
    }
