"""The data contract (``shared/CONTRACT.md``) as code.

Every other package imports schemas, names and rules from here; this package
imports nothing of ours.
"""
from .paths import TABLES, BronzeFileName, LakePaths, hour_partition
from .reasons import ALL_REASONS, RejectReason
from .tables import (
    BRONZE_SCHEMA,
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    QUARANTINE_SCHEMA,
    REGISTRY_SCHEMA,
    REJECTS_SCHEMA,
    SILVER_SCHEMA,
)
from .topics import DEFAULT_PARTITIONS, DLQ_TOPIC, MAX_MESSAGE_BYTES, TELEMETRY_TOPIC
from .validation import Accepted, Refused, validate_message

__all__ = [
    "TABLES", "BronzeFileName", "LakePaths", "hour_partition", "ALL_REASONS", "RejectReason",
    "BRONZE_SCHEMA", "REJECTS_SCHEMA", "SILVER_SCHEMA", "QUARANTINE_SCHEMA",
    "GOLD_VEHICLE_HOURLY_SCHEMA", "GOLD_ZONE_HOURLY_SCHEMA", "GOLD_VEHICLE_STATE_SCHEMA",
    "REGISTRY_SCHEMA", "DEFAULT_PARTITIONS", "DLQ_TOPIC", "MAX_MESSAGE_BYTES", "TELEMETRY_TOPIC",
    "Accepted", "Refused", "validate_message",
]
