"""The Silver and Gold rules of the contract (sections 3 and 4), written once.

The Silver job, the Gold job, the quality gates (``quality/``) and the
benchmarks' DuckDB baselines all take their thresholds, reason codes and
definitions from here.

Decisions where the contract is silent (each one what an analyst expects):

**Signal positions.** In the signal shape, ``lat`` and ``lon`` arrive as two
messages; on their own each would be quarantined as ``invalid_gps`` ("only
one of them present"). The simulator, like a real TCU, gives a vehicle's lat
and lon signals the same timestamp. So Silver first pairs, within the Bronze
hour it processes, the ``lat`` and ``lon`` signals of the same ``did`` and
``timestamp`` into **one position row** before any rule runs. The row keeps
a contract-derived id, the one of its lat signal (``"{did}:lat:{timestamp}"``,
see ``position_event_id``), and the Bronze coordinates (``ingest_ts``,
``kafka_partition``, ``kafka_offset``) of that lat message; its lon message
has the same ``did`` and ``timestamp``. Redelivered copies of either half in
the same hour are duplicates. A half whose partner is not in the hour is
handled this way: if Silver already holds its position (a redelivery of one
half, e.g. a retry that crossed the hour boundary), it is a duplicate and is
dropped like any duplicate; otherwise it is quarantined as ``invalid_gps``
under its own event id (a TCU that really sent one coordinate, or a pair
split across Bronze hours, which the simulator never produces).

**Other signals stay one row each** (``soc``, ``speed``...): ``vehicle_state``
rebuilds a vehicle from these fragments, as the contract says.

**Boolean signals**: ``0`` is false, any other number true.

**schema_version**: a snapshot without ``schema_version`` is version 1 (the
only one Bronze accepts); a signal has none (null).

**Payloads Silver cannot parse** (impossible for Bronze written by our
ingest, which validated every message, but possible for a hand-made or
older Bronze) are quarantined with reason ``malformed_payload``, checked
before the contract's rules since such a row has no values to check.

**Deduplication scope.** The MERGE into Silver matches on ``(vehicle_id,
event_id)`` restricted to the ``event_date`` partitions the batch could
collide with, which keeps each MERGE's memory bounded by the partitions it
touches (delta-rs issues 2573, 2802, 4422): each row's date after time
correction, the date of its raw (sender) time, and the dates the index of
corrected events (``silver/_corrected``, by sender date) gives for its
events. The copies of an event share the sender's time, so a copy whose
time was kept is in its sender's date, and one whose time was corrected (a
sender clock more than 5 minutes ahead or 7 days behind) is found through
the index: no redelivery escapes, whatever the clocks and the days.

**First ingested wins** within a batch by ``WINNER_ORDER``, and across
batches: a candidate ingested before the copy Silver holds replaces it (the
MERGE updates the row, moving it to its own ``event_date``), so the order in
which hours are published, or two hours committing at once (Delta's
optimistic concurrency, retried), does not change which copy Silver keeps.
The ledger (``lake_core.ledger``) moves a replaced copy from its hour's new
rows to that hour's duplicates.

**Gold.** ``distance_km`` sums the legs between consecutive *positioned*
rows of a vehicle's hour (rows without a position, such as a signal
vehicle's ``soc`` rows, are skipped rather than breaking the chain; with
them, a signal vehicle could never travel). ``usage_seconds`` walks all
rows of the hour; a signal vehicle sends no ``in_use`` and so has 0.
``zone_hourly`` counts rows that have a ``zone_id``. ``vehicle_state`` keeps
every field's last non-null value; a day rebuilt after a later day only
fills the fields the state lacks (see ``beam_pipelines.gold``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from lake_schemas.fields import closed_range, field_of
from lake_schemas.messages import VEHICLE_ID_PATTERN, signal_event_id

__all__ = [
    "MAX_FUTURE_SKEW_MS",
    "MAX_PAST_SKEW_MS",
    "correct_event_time",
    "QuarantineReason",
    "QuarantineRule",
    "QUARANTINE_RULES",
    "quarantine_reasons",
    "LAT_RANGE",
    "LON_RANGE",
    "SOC_RANGE",
    "SPEED_RANGE",
    "DEDUP_KEY",
    "WINNER_ORDER",
    "GEOHASH_PRECISION",
    "UNKNOWN_VEHICLE_TYPE",
    "POSITION_SIGNALS",
    "position_event_id",
    "boolean_signal",
    "Action",
    "Expectation",
    "EXPECTATIONS",
    "expectations_for",
    "QUARANTINE_RATE_MAX",
    "EARTH_RADIUS_KM",
    "MAX_LEG_SPEED_KMH",
    "MAX_USAGE_GAP_S",
    "LOW_BATTERY_SOC_PCT",
    "GOLD_ORDER",
    "haversine_km",
]

MS = pa.timestamp("ms", tz="UTC")

# --------------------------------------------------------------------------
# Rule 1: server-side time
# --------------------------------------------------------------------------
#: An event time more than this after its ingest time is a sender clock ahead.
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
#: An event time more than this before its ingest time is a clock behind (or a stale buffer).
MAX_PAST_SKEW_MS = 7 * 24 * 3600 * 1000


def correct_event_time(event_ts: pa.Array, ingest_ts: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Rule 1: ``(event_ts, ts_corrected)``; a time out of bounds becomes the ingest time.

    Both bounds are strict: exactly 5 minutes ahead is kept.
    """
    ev = pc.cast(event_ts, pa.int64())
    ing = pc.cast(ingest_ts, pa.int64())
    skew = pc.subtract(ev, ing)
    corrected = pc.or_(pc.greater(skew, MAX_FUTURE_SKEW_MS), pc.less(skew, -MAX_PAST_SKEW_MS))
    corrected = corrected.fill_null(False)
    fixed = pc.if_else(corrected, ing, ev)
    return pc.cast(fixed, MS), corrected


# --------------------------------------------------------------------------
# Rule 2: quarantine
# --------------------------------------------------------------------------
class QuarantineReason(str, Enum):
    #: Not a contract reason: a payload Silver cannot parse (see the module docstring).
    MALFORMED_PAYLOAD = "malformed_payload"
    INVALID_GPS = "invalid_gps"
    INVALID_SOC = "invalid_soc"
    INVALID_SPEED = "invalid_speed"

    def __str__(self) -> str:
        return self.value


# The ranges are the message fields' (``lake_schemas.fields``); here is what a value outside one does.
LAT_RANGE = closed_range("lat")
LON_RANGE = closed_range("lon")
SOC_RANGE = closed_range("soc_pct")
SPEED_RANGE = closed_range("speed_kmh")


def _outside(values: pa.Array, bounds: tuple[float, float]) -> pa.Array:
    """True where a non-null value is outside ``bounds`` (inclusive) or NaN."""
    low, high = bounds
    outside = pc.or_(pc.or_(pc.less(values, low), pc.greater(values, high)), pc.is_nan(values))
    return outside.fill_null(False)


def _invalid_gps(t: pa.Table) -> pa.Array:
    lat, lon = t["lat"], t["lon"]
    one_present = pc.xor(pc.is_null(lat), pc.is_null(lon))
    both_zero = pc.and_(pc.equal(lat, 0.0), pc.equal(lon, 0.0)).fill_null(False)
    return pc.or_(pc.or_(one_present, both_zero), pc.or_(_outside(lat, LAT_RANGE), _outside(lon, LON_RANGE)))


@dataclass(frozen=True)
class QuarantineRule:
    """One quarantine rule: ``failing(table)`` is true on the rows it sends to quarantine."""

    reason: QuarantineReason
    description: str
    failing: Callable[[pa.Table], pa.Array] = field(repr=False)


#: Contract order: the first failing rule names the reason.
QUARANTINE_RULES: tuple[QuarantineRule, ...] = (
    QuarantineRule(
        QuarantineReason.INVALID_GPS,
        f"lat outside {list(LAT_RANGE)}, lon outside {list(LON_RANGE)}, lat and lon both "
        "exactly 0, or only one of them present",
        _invalid_gps,
    ),
    QuarantineRule(
        QuarantineReason.INVALID_SOC, f"soc_pct outside {list(SOC_RANGE)}", lambda t: _outside(t["soc_pct"], SOC_RANGE)
    ),
    QuarantineRule(
        QuarantineReason.INVALID_SPEED,
        f"speed_kmh outside {list(SPEED_RANGE)}",
        lambda t: _outside(t["speed_kmh"], SPEED_RANGE),
    ),
)


def quarantine_reasons(table: pa.Table) -> pa.Array:
    """Rule 2 on a table with the Silver measurement columns: the reason of each row, null when it passes."""
    reason = pa.nulls(table.num_rows, pa.string())
    for rule in reversed(QUARANTINE_RULES):  # the earliest rule is applied last, so it wins
        reason = pc.if_else(rule.failing(table), pa.scalar(rule.reason.value), reason)
    return reason


# --------------------------------------------------------------------------
# Rule 3: deduplication, and enrichment
# --------------------------------------------------------------------------
DEDUP_KEY = ("vehicle_id", "event_id")
#: Among rows of one key, the first in this order wins (the first ingested).
WINNER_ORDER = (("ingest_ts", "ascending"), ("kafka_partition", "ascending"), ("kafka_offset", "ascending"))

GEOHASH_PRECISION = 6
#: ``vehicle_type`` of a vehicle the registry does not list.
UNKNOWN_VEHICLE_TYPE = "unknown"

POSITION_SIGNALS = ("lat", "lon")


def position_event_id(did: str, timestamp_ms: int) -> str:
    """The event id of a paired lat+lon position: its lat signal's id."""
    return signal_event_id(did, "lat", timestamp_ms)


def boolean_signal(value: pa.Array) -> pa.Array:
    """A 0/1 signal value as a boolean: 0 is false, any other number true."""
    return pc.not_equal(value, 0)


# --------------------------------------------------------------------------
# Expectations: every rule with what its failure does (as Delta Live Tables)
# --------------------------------------------------------------------------
class Action(str, Enum):
    WARN = "warn"  # recorded in the validation result; the batch is published
    DROP = "drop"  # the row goes to quarantine with the rule's reason
    FAIL = "fail"  # the batch is not published

    def __str__(self) -> str:
        return self.value


#: The Silver gate fails when more than this share of a batch is quarantined.
QUARANTINE_RATE_MAX = 0.10


@dataclass(frozen=True)
class Expectation:
    """One checkable rule of a table.

    ``kind`` says how ``quality/`` checks it:

    - ``not_null`` (``columns``), ``unique`` (``columns`` together),
      ``between`` (``columns[0]`` in ``[min_value, max_value]``, nulls pass),
      ``in_set`` / ``not_in_set`` (``value_set``), ``regex`` (``pattern``),
      ``a_ge_b`` (``columns[0] >= columns[1]`` where both are set),
      ``columns_match`` (the table has exactly its schema's columns);
    - ``max_share`` (non-null ``columns[0]`` is at most ``max_value`` of the rows);
    - ``quarantine`` (a DROP rule: how many rows have ``reason``);
    - ``sum_equals`` (``sum(columns[0])`` equals a number given at run time
      under the key ``param``).

    ``DROP`` rules name the quarantine ``reason`` they apply; in the gate they
    are recorded (how many rows each dropped) and their ranges are checked on
    what is published.

    ``scope`` is what the rule looks at: ``rows`` (the rows to publish) or
    ``batch`` (every Bronze row of the batch, with the quarantine ``reason``
    of each, null for a row that was published or was a duplicate).
    """

    name: str
    table: str
    action: Action
    kind: str
    columns: tuple[str, ...] = ()
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    value_set: Optional[tuple] = None
    pattern: Optional[str] = None
    param: Optional[str] = None
    reason: Optional[QuarantineReason] = None
    description: str = ""
    scope: str = "rows"


def _e(name: str, table: str, action: str, kind: str, *columns: str, **kw: Any) -> Expectation:
    return Expectation(name=name, table=table, action=Action(action), kind=kind, columns=tuple(columns), **kw)


def _plausible(column: str) -> dict[str, Optional[float]]:
    """``min_value``/``max_value`` of a ``between`` rule: the message field's range."""
    f = field_of(column)
    return {"min_value": f.low, "max_value": f.high}


_SILVER = "silver_telemetry"
_HOURLY = "gold_vehicle_hourly"
_ZONE = "gold_zone_hourly"
_STATE = "gold_vehicle_state"

#: Columns a gate adds to what it reads, not stored in the table: ``columns_match`` looks past them.
#: ``bronze_generation`` comes from Bronze file names (``BronzeFileName.generation``).
DERIVED_COLUMNS = frozenset({"bronze_generation"})

EXPECTATIONS: tuple[Expectation, ...] = (
    # Bronze: what the ingest promises.
    _e("bronze_columns", "bronze_telemetry", "fail", "columns_match", description="Bronze has the contract's columns"),
    _e(
        "bronze_required",
        "bronze_telemetry",
        "fail",
        "not_null",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "ingest_ts",
        "payload",
        "vehicle_id",
        "event_ts",
        description="every Bronze row has its coordinates, payload and parsed vehicle id and time",
    ),
    _e(
        "bronze_offsets_unique",
        "bronze_telemetry",
        "fail",
        "unique",
        "kafka_topic",
        "bronze_generation",  # from the file name: a new generation starts the topic's offsets again
        "kafka_partition",
        "kafka_offset",
        description="every Kafka offset of a generation lands once",
    ),
    _e("bronze_vehicle_id_format", "bronze_telemetry", "fail", "regex", "vehicle_id", pattern=VEHICLE_ID_PATTERN),
    # Silver: the drop rules (quarantine), then what a published batch must satisfy.
    *(
        _e(
            f"silver_{r.reason.value}",
            _SILVER,
            "drop",
            "quarantine",
            "reason",
            reason=r.reason,
            description=r.description,
            scope="batch",
        )
        for r in QUARANTINE_RULES
    ),
    _e(
        "silver_quarantine_rate",
        _SILVER,
        "fail",
        "max_share",
        "reason",
        max_value=QUARANTINE_RATE_MAX,
        description=f"at most {QUARANTINE_RATE_MAX:.0%} of a batch is quarantined",
        scope="batch",
    ),
    _e("silver_columns", _SILVER, "fail", "columns_match"),
    _e(
        "silver_required",
        _SILVER,
        "fail",
        "not_null",
        "vehicle_id",
        "event_id",
        "event_ts",
        "ingest_ts",
        "event_date",
        "ts_corrected",
        "source_shape",
        "vehicle_type",
        "kafka_partition",
        "kafka_offset",
    ),
    _e("silver_key_unique", _SILVER, "fail", "unique", *DEDUP_KEY),
    _e("silver_source_shape", _SILVER, "fail", "in_set", "source_shape", value_set=("snapshot", "signal")),
    _e("silver_lat_range", _SILVER, "fail", "between", "lat", min_value=LAT_RANGE[0], max_value=LAT_RANGE[1]),
    _e("silver_lon_range", _SILVER, "fail", "between", "lon", min_value=LON_RANGE[0], max_value=LON_RANGE[1]),
    _e("silver_soc_range", _SILVER, "fail", "between", "soc_pct", min_value=SOC_RANGE[0], max_value=SOC_RANGE[1]),
    _e(
        "silver_speed_range",
        _SILVER,
        "fail",
        "between",
        "speed_kmh",
        min_value=SPEED_RANGE[0],
        max_value=SPEED_RANGE[1],
    ),
    _e("silver_heading_range", _SILVER, "warn", "between", "heading_deg", **_plausible("heading_deg")),
    _e("silver_accuracy_positive", _SILVER, "warn", "between", "accuracy_m", **_plausible("accuracy_m")),
    _e("silver_battery_temp_plausible", _SILVER, "warn", "between", "battery_temp_c", **_plausible("battery_temp_c")),
    _e(
        "silver_vehicle_registered",
        _SILVER,
        "warn",
        "not_in_set",
        "vehicle_type",
        value_set=(UNKNOWN_VEHICLE_TYPE,),
        description="every vehicle is in the registry",
    ),
    # Gold.
    _e("gold_hourly_columns", _HOURLY, "fail", "columns_match"),
    _e("gold_hourly_key_unique", _HOURLY, "fail", "unique", "vehicle_id", "hour_start"),
    _e(
        "gold_hourly_required",
        _HOURLY,
        "fail",
        "not_null",
        "vehicle_id",
        "hour_start",
        "event_date",
        "vehicle_type",
        "event_count",
        "distance_km",
        "usage_seconds",
        "low_battery_events",
    ),
    _e("gold_hourly_event_count", _HOURLY, "fail", "between", "event_count", min_value=1, max_value=None),
    _e("gold_hourly_distance", _HOURLY, "fail", "between", "distance_km", min_value=0.0, max_value=None),
    _e("gold_hourly_usage", _HOURLY, "fail", "between", "usage_seconds", min_value=0.0, max_value=3600.0),
    _e("gold_hourly_soc_order", _HOURLY, "fail", "a_ge_b", "soc_max", "soc_min"),
    _e(
        "gold_hourly_reconciles",
        _HOURLY,
        "fail",
        "sum_equals",
        "event_count",
        param="silver_rows",
        description="the day's sum(event_count) equals Silver's rows of that day",
    ),
    _e("gold_zone_columns", _ZONE, "fail", "columns_match"),
    _e("gold_zone_key_unique", _ZONE, "fail", "unique", "zone_id", "hour_start"),
    _e(
        "gold_zone_required",
        _ZONE,
        "fail",
        "not_null",
        "zone_id",
        "hour_start",
        "event_date",
        "active_vehicles",
        "event_count",
    ),
    _e("gold_zone_counts", _ZONE, "fail", "a_ge_b", "event_count", "active_vehicles"),
    _e("gold_state_columns", _STATE, "fail", "columns_match"),
    _e("gold_state_key_unique", _STATE, "fail", "unique", "vehicle_id"),
    _e("gold_state_required", _STATE, "fail", "not_null", "vehicle_id", "vehicle_type", "last_event_ts", "as_of_date"),
)


def expectations_for(table: str, action: Optional[Action] = None) -> list[Expectation]:
    """The expectations of ``table`` (optionally only those with ``action``), in declaration order."""
    return [e for e in EXPECTATIONS if e.table == table and (action is None or e.action == action)]


# --------------------------------------------------------------------------
# Gold definitions (contract section 4)
# --------------------------------------------------------------------------
EARTH_RADIUS_KM = 6371.0088  # the IUGG mean radius
#: A leg implying more than this speed is a GPS jump, not travel: left out of distance_km.
MAX_LEG_SPEED_KMH = 250.0
#: A gap longer than this between two rows is not counted as usage.
MAX_USAGE_GAP_S = 60.0
#: soc_pct strictly below this while not charging is a low-battery event.
LOW_BATTERY_SOC_PCT = 15.0
#: Order of a vehicle's rows.
GOLD_ORDER = ("event_ts", "event_id")


def haversine_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Great-circle distance in km on a sphere of radius ``EARTH_RADIUS_KM`` (numpy, element-wise)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
