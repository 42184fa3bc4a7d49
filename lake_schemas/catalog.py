"""What every table of the lake and every column means: the words beside the schemas.

The schemas themselves (``tables``, ``hot``) stay plain Arrow, byte for byte
what is written to Parquet and Delta; the meaning of each column lives here,
keyed by table and column, and ``python -m lake_schemas.reference`` renders
it with the schemas and the rules that check them (``rules.EXPECTATIONS``)
into ``docs/tables.md``. The columns that mirror the message take their
meaning from ``fields.MESSAGE_FIELDS``; ``tests/test_contract_reference.py``
fails when a column of any schema has no meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import pyarrow as pa

from lake_schemas.fields import MESSAGE_FIELDS, SIGNALS, MessageField
from lake_schemas.hot import GOLD_ALERTS_SCHEMA, SEVERITY, AlertRule
from lake_schemas.messages import MAX_EVENT_ID_CHARS, SNAPSHOT_SCHEMA_VERSIONS, VEHICLE_ID_PATTERN
from lake_schemas.paths import PARQUET_TABLES, TABLES
from lake_schemas.reasons import ALL_REASONS
from lake_schemas.rules import (
    GEOHASH_PRECISION,
    LOW_BATTERY_SOC_PCT,
    MAX_FUTURE_SKEW_MS,
    MAX_LEG_SPEED_KMH,
    MAX_PAST_SKEW_MS,
    MAX_USAGE_GAP_S,
    UNKNOWN_VEHICLE_TYPE,
    QuarantineReason,
)
from lake_schemas.tables import (
    BRONZE_SCHEMA,
    CORRECTED_INDEX_PATH,
    CORRECTED_INDEX_SCHEMA,
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    LEDGER_HOURS_SCHEMA,
    QUARANTINE_SCHEMA,
    REGISTRY_SCHEMA,
    REJECTS_SCHEMA,
    SILVER_SCHEMA,
)

__all__ = ["TableDoc", "TABLE_DOCS", "SNAPSHOT_DOCS", "SIGNAL_DOCS", "measurement_meaning"]


@dataclass(frozen=True)
class TableDoc:
    """One table: its schema, where it lives, what a row is, and what each column means."""

    name: str  # the SQL name (contract section 6), or the table's own name when it has none
    schema: pa.Schema
    summary: str
    columns: Mapping[str, str]
    path: Optional[str] = None  # under LAKE_ROOT; defaults to ``paths.TABLES[name]``
    sql: bool = True  # queryable by that name (``lake query``)

    @property
    def location(self) -> str:
        return self.path if self.path is not None else TABLES[self.name]

    @property
    def storage(self) -> str:
        return "Parquet (hive-partitioned)" if self.name in PARQUET_TABLES else "Delta"


def measurement_meaning(f: MessageField) -> str:
    """A message field's meaning as a Silver column: what it is, its unit, where it comes from."""
    unit = f" ({f.unit})" if f.unit else ""
    signals = [s.name for s in SIGNALS if s.column == f.column]
    source = f"snapshot `{f.group}.{f.name}`" + "".join(f", signal `{s}`" for s in signals)
    return f"{f.meaning}{unit}; from {source}"


def _codes(values: Iterable[object]) -> str:
    return ", ".join(f"`{v}`" for v in values)


_MS_PER_MIN, _MS_PER_DAY = 60_000, 86_400_000
_MEASUREMENTS = {f.column: measurement_meaning(f) for f in MESSAGE_FIELDS}
_STATE = {f.column: f"latest non-null value: {f.meaning}" + (f" ({f.unit})" if f.unit else "") for f in MESSAGE_FIELDS}

_BRONZE = {
    "kafka_topic": "the Kafka topic the record was read from",
    "kafka_partition": "the record's Kafka partition",
    "kafka_offset": "the record's offset in its partition (one row per offset and Bronze generation)",
    "ingest_ts": "the Kafka record timestamp (the ingest clock, UTC); the hour partition",
    "key": "the record key as received (the vehicle id); null when the record had none",
    "payload": "the message exactly as received (UTF-8 JSON)",
    "vehicle_id": "parsed from the payload for pruning: a snapshot's `vehicle_id` or a signal's `did`",
    "event_ts": "parsed from the payload for pruning: the sender's time (`ts` or `timestamp`), before rule 1",
}
_REJECTS = {
    **_BRONZE,
    "payload": "the message as received; bytes that are not UTF-8 are kept with backslash escapes "
    "(the DLQ topic holds the exact bytes)",
    "vehicle_id": "the vehicle id, when the message got far enough to name one",
    "event_ts": "the sender's time, when the message got far enough to give one",
    "reason": f"why the message was refused: one of {_codes(ALL_REASONS)} (`lake_schemas.reasons`)",
    "reason_detail": "a human-readable detail: which field and what was wrong",
}
_LINEAGE = {
    "kafka_topic": "the Kafka topic of the record (lineage)",
    "bronze_hour": "the Bronze hour folder holding the record, e.g. `2026-03-01T08` (the Kafka record's hour)",
    "bronze_file": "the Bronze file inside that folder (its name carries the generation, `g0001-p...`)",
    "paired_kafka_partition": "for a position paired from two signals, the lon signal's Kafka partition; "
    "null otherwise",
    "paired_kafka_offset": "for a paired position, the lon signal's Kafka offset; null otherwise",
    "sender_ts": "the sender's own time when rule 1 replaced it (`ts_corrected`); null otherwise",
}
_SILVER = {
    "vehicle_id": f"the vehicle: a snapshot's `vehicle_id` or a signal's `did` (`{VEHICLE_ID_PATTERN}`)",
    "event_id": f"a snapshot's `event_id` (1..{MAX_EVENT_ID_CHARS} characters), or a signal's derived "
    '`"{did}:{name}:{timestamp}"` (a paired position: its lat signal\'s)',
    "event_ts": f"the event time after rule 1: the sender's time, or `ingest_ts` when that was more than "
    f"{MAX_FUTURE_SKEW_MS // _MS_PER_MIN} minutes ahead or {MAX_PAST_SKEW_MS // _MS_PER_DAY} days behind",
    "ingest_ts": "the Kafka record timestamp of the copy kept (the first ingested copy wins)",
    "event_date": "the UTC date of `event_ts`; the partition",
    "ts_corrected": "true when rule 1 replaced the sender's time by `ingest_ts`",
    "source_shape": "the message's shape: `snapshot` (1a) or `signal` (1b)",
    **_MEASUREMENTS,
    "zone_id": f"geohash of lat/lon at precision {GEOHASH_PRECISION}; null without a position",
    "vehicle_type": f"the vehicle's type from the registry (`dims_vehicles`); `{UNKNOWN_VEHICLE_TYPE}` when "
    "the vehicle is not registered",
    "schema_version": f"a snapshot's `schema_version` ({_codes(sorted(SNAPSHOT_SCHEMA_VERSIONS))} when absent); "
    "null for a signal",
    "kafka_partition": "the Kafka partition of the copy kept (with `kafka_offset`: its Bronze record)",
    "kafka_offset": "the Kafka offset of the copy kept",
    **_LINEAGE,
}
_QUARANTINE = {
    **_SILVER,
    "ingest_ts": "the Kafka record timestamp of the message",
    "kafka_partition": "the message's Kafka partition (with `kafka_offset`: its Bronze record)",
    "kafka_offset": "the message's Kafka offset",
    "zone_id": "always null: a quarantined position is not trusted",
    "event_date": "the UTC date of `event_ts`, or of `ingest_ts` when the payload gave no time; the partition",
    "reason": f"why the row is not in Silver: one of {_codes(r.value for r in QuarantineReason)} "
    "(`lake_schemas.rules.QUARANTINE_RULES`: the first failing rule names it)",
    "bronze_hour": "the Bronze hour folder holding the message, e.g. `2026-03-01T08`; re-running the hour "
    "replaces its rows",
    "bronze_file": "the Bronze file inside that folder",
    "payload": "the message as received",
}
_HOURLY = {
    "vehicle_id": "the vehicle",
    "hour_start": "the start of the UTC hour of `event_ts`",
    "event_date": "the UTC date of `hour_start`; the partition",
    "vehicle_type": "the vehicle's type, as in Silver",
    "event_count": "Silver rows of the vehicle in the hour",
    "soc_avg": "mean of non-null `soc_pct` (%)",
    "soc_min": "minimum of non-null `soc_pct` (%)",
    "soc_max": "maximum of non-null `soc_pct` (%)",
    "speed_avg": "mean of non-null `speed_kmh` (km/h)",
    "speed_max": "maximum of non-null `speed_kmh` (km/h)",
    "distance_km": "haversine distance (km) over consecutive positioned rows of the hour, leaving out a leg "
    f"implying more than {MAX_LEG_SPEED_KMH:g} km/h or whose two rows share one `event_ts`",
    "usage_seconds": f"sum of the gaps (s) after rows with `in_use = true`, for gaps of at most {MAX_USAGE_GAP_S:g} s",
    "low_battery_events": f"rows with `soc_pct < {LOW_BATTERY_SOC_PCT:g}` and `charging` not true",
    "first_event_ts": "the hour's first `event_ts`",
    "last_event_ts": "the hour's last `event_ts`",
}
_ZONE = {
    "zone_id": f"the geohash (precision {GEOHASH_PRECISION}) of the rows' positions",
    "hour_start": "the start of the UTC hour of `event_ts`",
    "event_date": "the UTC date of `hour_start`; the partition",
    "active_vehicles": "distinct vehicles with a row in the zone and hour",
    "event_count": "Silver rows with this `zone_id` in the hour",
    "soc_avg": "mean of non-null `soc_pct` of those rows (%)",
}
_VEHICLE_STATE = {
    "vehicle_id": "the vehicle",
    "vehicle_type": "the vehicle's type, as in Silver",
    **_STATE,
    "zone_id": "latest non-null `zone_id`",
    "last_event_ts": "the vehicle's latest `event_ts`",
    "as_of_date": "the last Gold day folded into the state",
}
_ALERTS = {
    "alert_id": "deterministic id of the alert (vehicle, rule, opened_at): a replay gives the same ids",
    "vehicle_id": "the vehicle",
    "rule": f"the alert rule: one of {_codes(r.value for r in AlertRule)}",
    "severity": "the rule's severity: " + ", ".join(f"`{r.value}` {s}" for r, s in SEVERITY.items()),
    "opened_at": "event time the alert opened (for `offline`, the last `event_ts` plus the offline delay)",
    "resolved_at": "event time the alert resolved; null while it is open",
    "details": "what opened it, as JSON",
    "event_date": "the UTC date of `opened_at`; the partition",
}
_REGISTRY = {
    "vehicle_id": f"the vehicle (`{VEHICLE_ID_PATTERN}`)",
    "vehicle_type": "`scooter`, `ebike`, `car`, ... (free text: a fleet's own types)",
    "registered_at": "when the vehicle was first registered (kept when it is imported again)",
}
_CORRECTED_INDEX = {
    "vehicle_id": "the vehicle",
    "event_id": "the event whose time rule 1 replaced",
    "sender_date": "the UTC date of the sender's own time; the partition",
    "event_date": "the Silver partition holding the row",
}
_LEDGER = {
    "hour": "the Bronze hour, e.g. `2026-03-01T08`",
    "day": "the hour's UTC date; the partition",
    "generation": "the Bronze generation (file names `g{n}-`)",
    "kafka_partition": "the Kafka partition",
    "kafka_topic": "the Kafka topic",
    "offsets_first": "first Kafka offset of the ingest passes that wrote into the hour (gaps included)",
    "offsets_last": "last Kafka offset of those passes (gaps included)",
    "offsets_consumed": "offsets consumed by the ingest passes that wrote into the hour",
    "other_hours_rows": "of those, rows the passes filed in other hours (erased ones included)",
    "gap_records": "offsets deleted by retention before the ingest read them",
    "bronze_rows": "Bronze rows of the hour",
    "rejects": "rejects rows of the hour",
    "erased_bronze": "Bronze rows `lake forget` erased (from the `_COMPLETE` marker)",
    "erased_rejects": "rejects rows `lake forget` erased",
    "silver_new": "Silver rows whose first copy is in this Bronze hour",
    "quarantined": "rows of the hour quarantined by Silver",
    "duplicates": "copies of an event Silver holds from an earlier record",
    "paired_positions": "lon signals folded into their lat's row",
    "erased_silver": "Silver and quarantine rows `lake forget` erased",
    "silver_rows": "Silver rows whose `event_ts` is in the hour (event time)",
    "gold_event_count": "`gold_vehicle_hourly.event_count` of the hour (event time)",
    "silver_published_at": "when Silver published the hour; null until it has",
    "gold_published_at": "when Gold published the hour's day; null until it has",
}

#: Every table, in the order of the contract's sections.
TABLE_DOCS: tuple[TableDoc, ...] = (
    TableDoc(
        "bronze_telemetry",
        BRONZE_SCHEMA,
        "What arrived, kept as it arrived: one row per accepted Kafka record, partitioned "
        "`year=/month=/day=/hour=` by the Kafka record timestamp (contract section 2).",
        _BRONZE,
    ),
    TableDoc(
        "bronze_rejects",
        REJECTS_SCHEMA,
        "Records refused at the door of Bronze, partitioned like Bronze: with Bronze, exactly one row per "
        "consumed offset (contract section 2).",
        _REJECTS,
    ),
    TableDoc(
        "silver_telemetry",
        SILVER_SCHEMA,
        "Clean events, one row per distinct `(vehicle_id, event_id)` (the first ingested wins), "
        "partitioned by `event_date` (contract section 3).",
        _SILVER,
    ),
    TableDoc(
        "silver_quarantine",
        QUARANTINE_SCHEMA,
        "Rows Silver's rule 2 kept out, as parsed, with why and where the message is in Bronze; "
        "partitioned by `event_date`.",
        _QUARANTINE,
    ),
    TableDoc(
        "gold_vehicle_hourly",
        GOLD_VEHICLE_HOURLY_SCHEMA,
        "One row per vehicle and UTC hour (of `event_ts`) with at least one Silver row, partitioned by "
        "`event_date` (contract section 4).",
        _HOURLY,
    ),
    TableDoc(
        "gold_zone_hourly",
        GOLD_ZONE_HOURLY_SCHEMA,
        "One row per zone and UTC hour, over Silver rows that have a `zone_id`.",
        _ZONE,
    ),
    TableDoc(
        "gold_vehicle_state",
        GOLD_VEHICLE_STATE_SCHEMA,
        "One row per vehicle: the last non-null value of every Silver field, by `event_ts` then `event_id`.",
        _VEHICLE_STATE,
    ),
    TableDoc(
        "gold_alerts",
        GOLD_ALERTS_SCHEMA,
        "The daily copy of the hot store's alerts opened that day, as they stood then (contract section 9); "
        "the copy is published only if `lake_schemas.hot.gold_alerts_failures` finds nothing wrong.",
        _ALERTS,
    ),
    TableDoc(
        "dims_vehicles",
        REGISTRY_SCHEMA,
        "The vehicle registry: one row per vehicle (contract section 5).",
        _REGISTRY,
    ),
    TableDoc(
        "ledger_hours",
        LEDGER_HOURS_SCHEMA,
        "One row per Bronze hour, Kafka generation and partition: every number accounted for "
        "(contract section 10; the equations are `lake_schemas.ledger.EQUATIONS`).",
        _LEDGER,
    ),
    TableDoc(
        "silver_corrected_index",
        CORRECTED_INDEX_SCHEMA,
        "Silver's index of the events whose time rule 1 replaced, by the sender's date: how a later copy "
        "finds the row whatever the clocks. Internal (no SQL name).",
        _CORRECTED_INDEX,
        path=CORRECTED_INDEX_PATH,
        sql=False,
    ),
)

#: The snapshot's fields outside its groups (contract section 1a).
SNAPSHOT_DOCS: Mapping[str, str] = {
    "schema_version": f"the message version; accepted: {_codes(sorted(SNAPSHOT_SCHEMA_VERSIONS))} (absent means 1)",
    "event_id": f"required; 1..{MAX_EVENT_ID_CHARS} characters, unique per vehicle",
    "vehicle_id": f"required; matches `{VEHICLE_ID_PATTERN}`",
    "ts": "required; RFC 3339 with an offset or `Z`, or integer epoch milliseconds; 2000..2100",
}
#: The signal's fields (contract section 1b).
SIGNAL_DOCS: Mapping[str, str] = {
    "did": f"required; the vehicle id (`{VEHICLE_ID_PATTERN}`)",
    "timestamp": "required; epoch milliseconds, 2000..2100",
    "name": "required; one of " + _codes(s.name for s in SIGNALS),
    "float_value": "the value (wins when both are sent); `float_value` or `int_value` is required",
    "int_value": "the value as an integer (|value| <= 2^53); 0/1 for boolean signals",
}
