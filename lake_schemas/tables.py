"""Arrow schemas of every table of the lake (contract sections 2 to 6).

One module owns them all so that a writer, a reader and a quality gate can
never disagree about a column.
"""

from __future__ import annotations

import pyarrow as pa

from lake_schemas.fields import MESSAGE_FIELDS

TS = pa.timestamp("ms", tz="UTC")

BRONZE_SCHEMA = pa.schema(
    [
        pa.field("kafka_topic", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("ingest_ts", TS, nullable=False),
        pa.field("key", pa.string()),
        pa.field("payload", pa.string(), nullable=False),
        pa.field("vehicle_id", pa.string()),
        pa.field("event_ts", TS),
    ]
)

#: Rejects: Bronze's columns plus the reason code and a human detail. A
#: payload that is not UTF-8 is kept with backslash escapes; the DLQ topic
#: holds its exact bytes.
REJECTS_SCHEMA = BRONZE_SCHEMA.append(pa.field("reason", pa.string(), nullable=False)).append(
    pa.field("reason_detail", pa.string())
)

#: The Silver columns that come from the message itself, in contract order (``fields.MESSAGE_FIELDS``).
MEASUREMENT_FIELDS = [f.arrow_field for f in MESSAGE_FIELDS]

#: Where a Silver row came from (contract section 10), beside ``kafka_partition`` and
#: ``kafka_offset``: the topic and the Bronze file that holds the record (``bronze_file`` names the
#: generation, ``g0001-p...``), for a position paired from two signals (lat, lon) the lon's record, and
#: the sender's time rule 1 replaced (what finds the copies of a corrected event: ``corrected_index``).
#: Appended after the older columns (an older table is a prefix of this schema).
LINEAGE_FIELDS = [
    pa.field("kafka_topic", pa.string()),
    pa.field("bronze_hour", pa.string()),  # "2026-03-01T08": the Bronze hour folder (the Kafka record's hour)
    pa.field("bronze_file", pa.string()),  # file name inside that folder
    pa.field("paired_kafka_partition", pa.int32()),  # null unless the row's lon came from another record
    pa.field("paired_kafka_offset", pa.int64()),
    pa.field("sender_ts", TS),  # the sender's own time when rule 1 replaced it (ts_corrected), else null
]

SILVER_SCHEMA = pa.schema(
    [
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_ts", TS, nullable=False),
        pa.field("ingest_ts", TS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("ts_corrected", pa.bool_(), nullable=False),
        pa.field("source_shape", pa.string(), nullable=False),
        *MEASUREMENT_FIELDS,
        pa.field("zone_id", pa.string()),
        pa.field("vehicle_type", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32()),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        *LINEAGE_FIELDS,
    ]
)

#: Quarantine keeps the Silver row as parsed (after time correction and
#: enrichment; ``zone_id`` stays null since the position is not trusted), why
#: (``reason``, a ``lake_schemas.rules.QuarantineReason``), and where the
#: message is in Bronze (hour, file, Kafka partition and offset) with its
#: payload as received. Fields a malformed payload cannot give are nullable;
#: ``event_date`` is then the ingest date. Re-running an hour replaces that
#: hour's rows (``bronze_hour``).
_QUARANTINE_REQUIRED = {"ingest_ts", "event_date", "ts_corrected", "vehicle_type", "kafka_partition", "kafka_offset"}
QUARANTINE_SCHEMA = pa.schema(
    [f if f.name in _QUARANTINE_REQUIRED else f.with_nullable(True) for f in SILVER_SCHEMA if f not in LINEAGE_FIELDS]
    + [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("bronze_hour", pa.string(), nullable=False),  # "2026-03-01T08"
        pa.field("bronze_file", pa.string(), nullable=False),  # file name inside that hour's partition
        pa.field("payload", pa.string(), nullable=False),
    ]
    + [f for f in LINEAGE_FIELDS if f.name not in ("bronze_hour", "bronze_file")]
)

GOLD_VEHICLE_HOURLY_SCHEMA = pa.schema(
    [
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("hour_start", TS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("vehicle_type", pa.string(), nullable=False),
        pa.field("event_count", pa.int64(), nullable=False),
        pa.field("soc_avg", pa.float64()),
        pa.field("soc_min", pa.float64()),
        pa.field("soc_max", pa.float64()),
        pa.field("speed_avg", pa.float64()),
        pa.field("speed_max", pa.float64()),
        pa.field("distance_km", pa.float64(), nullable=False),
        pa.field("usage_seconds", pa.float64(), nullable=False),
        pa.field("low_battery_events", pa.int64(), nullable=False),
        pa.field("first_event_ts", TS, nullable=False),
        pa.field("last_event_ts", TS, nullable=False),
    ]
)

GOLD_ZONE_HOURLY_SCHEMA = pa.schema(
    [
        pa.field("zone_id", pa.string(), nullable=False),
        pa.field("hour_start", TS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("active_vehicles", pa.int64(), nullable=False),
        pa.field("event_count", pa.int64(), nullable=False),
        pa.field("soc_avg", pa.float64()),
    ]
)

GOLD_VEHICLE_STATE_SCHEMA = pa.schema(
    [
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("vehicle_type", pa.string(), nullable=False),
        *MEASUREMENT_FIELDS,
        pa.field("zone_id", pa.string()),
        pa.field("last_event_ts", TS, nullable=False),
        pa.field("as_of_date", pa.date32(), nullable=False),
    ]
)

REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("vehicle_type", pa.string(), nullable=False),
        pa.field("registered_at", TS, nullable=False),
    ]
)

#: ``silver/_corrected``: where Silver keeps each event whose time rule 1 replaced, by the sender's date
#: (``beam_pipelines.silver.corrected_index``): how a later copy of it finds it, whatever the clocks.
CORRECTED_INDEX_PATH = "silver/_corrected"
CORRECTED_INDEX_SCHEMA = pa.schema(
    [
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("sender_date", pa.date32(), nullable=False),  # the partition
        pa.field("event_date", pa.date32(), nullable=False),  # the Silver partition holding the row
    ]
)

#: ``_ledger/hours`` (SQL ``ledger_hours``, contract section 10): one row per hour, Kafka generation
#: and partition. The ingest's figures are of the Bronze hour (Kafka record time); ``silver_rows``
#: and ``gold_event_count`` are of the same UTC hour in event time (Gold's hours). The equations
#: that must hold between the columns are ``lake_schemas.ledger.EQUATIONS``.
LEDGER_HOURS_SCHEMA = pa.schema(
    [
        pa.field("hour", pa.string(), nullable=False),  # "2026-03-01T08"
        pa.field("day", pa.date32(), nullable=False),  # the hour's UTC date (the partition)
        pa.field("generation", pa.int32(), nullable=False),  # Bronze generation (file names g{n}-)
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_topic", pa.string()),
        # the ingest (from Bronze's file names, files and _ledger/gaps)
        pa.field("offsets_first", pa.int64()),
        pa.field("offsets_last", pa.int64()),
        pa.field("offsets_consumed", pa.int64()),  # offsets of the ingest passes that wrote into the hour
        pa.field("other_hours_rows", pa.int64()),  # of those, rows the passes filed in other hours (erased included)
        pa.field("gap_records", pa.int64()),  # offsets deleted by retention before the ingest read them
        pa.field("bronze_rows", pa.int64()),
        pa.field("rejects", pa.int64()),
        pa.field("erased_bronze", pa.int64()),  # Bronze rows ``lake forget`` erased (from the _COMPLETE marker)
        pa.field("erased_rejects", pa.int64()),
        # Silver, as its job published the Bronze hour
        pa.field("silver_new", pa.int64()),  # Silver rows whose first copy is in this Bronze hour
        pa.field("quarantined", pa.int64()),
        pa.field("duplicates", pa.int64()),  # copies of an event Silver holds from an earlier record
        pa.field("paired_positions", pa.int64()),  # lon signals folded into their lat's row
        pa.field("erased_silver", pa.int64()),  # Silver and quarantine rows ``lake forget`` erased
        # Gold, in event time
        pa.field("silver_rows", pa.int64()),  # Silver rows whose event_ts is in the hour
        pa.field("gold_event_count", pa.int64()),  # gold_vehicle_hourly.event_count of the hour
        pa.field("silver_published_at", TS),
        pa.field("gold_published_at", TS),
    ]
)
