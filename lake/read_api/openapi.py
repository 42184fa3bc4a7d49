"""The read API's OpenAPI 3.1 document (``GET /openapi.json``), written out (Starlette, not FastAPI).

Parameter schemas carry the same bounds and patterns ``read_api.params``
enforces, so a client (or schemathesis) learns the limits from it.
"""

from __future__ import annotations

from typing import Any

from lake.read_api.params import MAX_POINTS, MAX_RANGE_DAYS, MAX_VEHICLES_PAGE
from lake_schemas.messages import VEHICLE_ID_PATTERN

__all__ = ["openapi_document"]

_TIME = {
    "description": "RFC 3339 with an offset or Z, or integer epoch milliseconds (like a message's ts)",
    "oneOf": [{"type": "string", "format": "date-time"}, {"type": "string", "pattern": "^[0-9]{1,16}$"}],
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}},
    "required": ["error"],
}


def _q(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_VEHICLE_PATH = {
    "name": "vehicle_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": VEHICLE_ID_PATTERN},
    "example": "V000001",
}


def _responses(ok: str, extra: tuple[int, ...] = ()) -> dict:
    responses: dict[str, Any] = {
        "200": {"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}},
        "400": {"description": "a bad parameter, named", "content": {"application/json": {"schema": _ERROR}}},
        "401": {"description": "no or bad API key (from outside loopback)"},
        "503": {"description": "the hot store is unreachable", "content": {"application/json": {"schema": _ERROR}}},
    }
    for status in extra:
        responses[str(status)] = {"description": "unknown vehicle", "content": {"application/json": {"schema": _ERROR}}}
    return responses


def openapi_document() -> dict[str, Any]:
    get = "get"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telemetry-lake read API",
            "version": "1",
            "description": "Fleet state, telemetry, alerts and zone activity from the hot store (PostgreSQL, "
            "3 days) and the lake (Silver beyond). Keys: Authorization: Bearer <key> from outside loopback.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"apiKey": []}],
        "paths": {
            "/v1/vehicles": {
                get: {
                    "summary": "Latest state of every vehicle (by vehicle id, paged)",
                    "parameters": [
                        _q("zone", {"type": "string", "pattern": "^[0-9b-hjkmnp-z]{1,12}$"}, "geohash or prefix"),
                        _q("type", {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}, "vehicle type"),
                        _q("online", {"type": "boolean"}, "online or not"),
                        _q("low_battery", {"type": "boolean"}, "soc under 15 % and not charging"),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_VEHICLES_PAGE}, "page size"),
                        _q("after", {"type": "string", "pattern": VEHICLE_ID_PATTERN}, "next_after of the last page"),
                    ],
                    "responses": _responses("count, next_after, vehicles"),
                }
            },
            "/v1/vehicles/{vehicle_id}": {
                get: {
                    "summary": "One vehicle's latest state and open alerts",
                    "parameters": [_VEHICLE_PATH],
                    "responses": _responses("the vehicle", (404,)),
                }
            },
            "/v1/vehicles/{vehicle_id}/telemetry": {
                get: {
                    "summary": "One vehicle's series: hot store (1-minute windows) within its horizon, Silver "
                    "events beyond, one series, downsampled to at most max_points (first, last and extremes kept)",
                    "parameters": [
                        _VEHICLE_PATH,
                        _q("start", _TIME, "default: end minus 24 h"),
                        _q("end", _TIME, f"default: now; at most {MAX_RANGE_DAYS} days after start"),
                        _q("max_points", {"type": "integer", "minimum": 10, "maximum": MAX_POINTS}, "default 10000"),
                    ],
                    "responses": _responses("the series", (404,)),
                }
            },
            "/v1/alerts": {
                get: {
                    "summary": "Alerts, newest first",
                    "parameters": [
                        _q("state", {"type": "string", "enum": ["open", "resolved", "all"]}, "default open"),
                        _q("vehicle_id", {"type": "string", "pattern": VEHICLE_ID_PATTERN}, "one vehicle"),
                        _q("rule", {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"}, "one rule"),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "default 500"),
                        _q(
                            "before",
                            {"type": "string", "pattern": "^[0-9]{1,13}:[0-9a-f-]{36}$"},
                            "next_before of the last page",
                        ),
                    ],
                    "responses": _responses("count, next_before, alerts"),
                }
            },
            "/v1/zones/activity": {
                get: {
                    "summary": "Active vehicles and events per zone and 5-minute window (default: the latest)",
                    "parameters": [
                        _q("start", _TIME, "with end; at most 7 days"),
                        _q("end", _TIME, "with start"),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 50000}, "default 5000"),
                    ],
                    "responses": _responses("count, zones"),
                }
            },
            "/v1/stats": {
                get: {
                    "summary": "Fleet counts, alerts per rule, throughput, freshness of every layer",
                    "responses": _responses("the figures"),
                }
            },
            "/healthz": {
                get: {"summary": "200 when the hot store answers", "responses": {"200": {"description": "ok"}}}
            },
        },
    }
