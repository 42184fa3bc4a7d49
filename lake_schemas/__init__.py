"""The data contract (``shared/CONTRACT.md``) as code.

Every other package imports schemas, names and rules from here; this package
imports nothing of ours.
"""

from lake_schemas.paths import DAY_MS, HOUR_MS, TABLES, BronzeFileName, LakePaths, hour_partition
from lake_schemas.reasons import ALL_REASONS, RejectReason
from lake_schemas.tables import (
    BRONZE_SCHEMA,
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    QUARANTINE_SCHEMA,
    REGISTRY_SCHEMA,
    REJECTS_SCHEMA,
    SILVER_SCHEMA,
)
from lake_schemas.topics import DEFAULT_PARTITIONS, DLQ_TOPIC, MAX_MESSAGE_BYTES, TELEMETRY_TOPIC
from lake_schemas.validation import Accepted, Refused, validate_message

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "TABLES",
    "BronzeFileName",
    "LakePaths",
    "hour_partition",
    "ALL_REASONS",
    "RejectReason",
    "BRONZE_SCHEMA",
    "REJECTS_SCHEMA",
    "SILVER_SCHEMA",
    "QUARANTINE_SCHEMA",
    "GOLD_VEHICLE_HOURLY_SCHEMA",
    "GOLD_ZONE_HOURLY_SCHEMA",
    "GOLD_VEHICLE_STATE_SCHEMA",
    "REGISTRY_SCHEMA",
    "DEFAULT_PARTITIONS",
    "DLQ_TOPIC",
    "MAX_MESSAGE_BYTES",
    "TELEMETRY_TOPIC",
    "Accepted",
    "Refused",
    "validate_message",
]
