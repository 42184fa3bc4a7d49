"""Kafka names and limits of the contract (section 1)."""

TELEMETRY_TOPIC = "vehicle-telemetry"
DLQ_TOPIC = "vehicle-telemetry-dlq"
DEFAULT_PARTITIONS = 8
MAX_MESSAGE_BYTES = 16 * 1024

#: Headers put on every DLQ record, so a consumer of the DLQ can find the
#: original without reading Bronze.
DLQ_HEADER_REASON = "lake.reason"
DLQ_HEADER_DETAIL = "lake.detail"
DLQ_HEADER_SOURCE = "lake.source"  # "{topic}/{partition}/{offset}"
