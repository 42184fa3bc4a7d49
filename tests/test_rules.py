"""The Silver and Gold rules of lake_schemas.rules, on small hand-made inputs."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from lake_schemas import rules
from lake_schemas.rules import Action, QuarantineReason
from lake_schemas.tables import (
    BRONZE_SCHEMA,
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    QUARANTINE_SCHEMA,
    SILVER_SCHEMA,
)

TS = pa.timestamp("ms", tz="UTC")
MIN = 60_000
DAY = 86_400_000


def test_server_side_time_bounds_are_strict():
    ingest = 1_772_352_000_000
    skews = [0, 5 * MIN, 5 * MIN + 1, -7 * DAY, -7 * DAY - 1, 3 * 3_600_000, -3 * 3_600_000]
    fixed, corrected = rules.correct_event_time(
        pa.array([ingest + s for s in skews], TS), pa.array([ingest] * len(skews), TS)
    )
    assert corrected.to_pylist() == [False, False, True, False, True, True, False]
    assert [t.timestamp() * 1000 - ingest for t in fixed.to_pylist()] == [0, 5 * MIN, 0, -7 * DAY, 0, 0, -3 * 3_600_000]


def _reasons(**columns):
    n = len(next(iter(columns.values())))
    base = {"lat": [None] * n, "lon": [None] * n, "soc_pct": [None] * n, "speed_kmh": [None] * n}
    base.update(columns)
    table = pa.table({k: pa.array(v, pa.float64()) for k, v in base.items()})
    return rules.quarantine_reasons(table).to_pylist()


def test_each_quarantine_rule_and_its_edges():
    assert _reasons(
        lat=[90.0, -90.0, 90.0001, -90.5, 10.0, 0.0, 0.0, 52.0, None],
        lon=[180.0, -180.0, 0.0, 0.0, 180.1, 0.0, 1.0, None, 13.0],
    ) == [None, None, "invalid_gps", "invalid_gps", "invalid_gps", "invalid_gps", None, "invalid_gps", "invalid_gps"]
    assert _reasons(soc_pct=[0.0, 100.0, -0.1, 100.1, None, float("nan")]) == [
        None,
        None,
        "invalid_soc",
        "invalid_soc",
        None,
        "invalid_soc",
    ]
    assert _reasons(speed_kmh=[0.0, 300.0, -1.0, 300.5]) == [None, None, "invalid_speed", "invalid_speed"]


def test_the_first_failing_rule_names_the_reason():
    assert _reasons(
        lat=[95.0, 10.0, 10.0], lon=[0.0, 10.0, 10.0], soc_pct=[120.0, 120.0, 50.0], speed_kmh=[500.0, 500.0, 500.0]
    ) == ["invalid_gps", "invalid_soc", "invalid_speed"]
    assert [r.reason for r in rules.QUARANTINE_RULES] == [
        QuarantineReason.INVALID_GPS,
        QuarantineReason.INVALID_SOC,
        QuarantineReason.INVALID_SPEED,
    ]


def test_position_ids_and_boolean_signals():
    assert rules.position_event_id("1000", 1690000000000) == "1000:lat:1690000000000"
    assert rules.boolean_signal(pa.array([0.0, 1.0, 2.0, None])).to_pylist() == [False, True, True, None]


def test_haversine_matches_hand_computed_distances():
    r = rules.EARTH_RADIUS_KM
    assert rules.haversine_km(52.0, 13.0, 52.001, 13.0) == pytest.approx(r * math.radians(0.001), rel=1e-9)
    assert rules.haversine_km(0.0, 0.0, 0.0, 1.0) == pytest.approx(r * math.radians(1.0), rel=1e-9)
    # Paris -> London, about 343.5 km
    assert rules.haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.5, abs=0.5)


def test_gold_constants_are_the_contracts():
    assert (rules.EARTH_RADIUS_KM, rules.MAX_LEG_SPEED_KMH, rules.MAX_USAGE_GAP_S, rules.LOW_BATTERY_SOC_PCT) == (
        6371.0088,
        250.0,
        60.0,
        15.0,
    )
    assert rules.GEOHASH_PRECISION == 6 and rules.DEDUP_KEY == ("vehicle_id", "event_id")
    assert [c for c, _ in rules.WINNER_ORDER] == ["ingest_ts", "kafka_partition", "kafka_offset"]


SCHEMAS = {
    "bronze_telemetry": BRONZE_SCHEMA,
    "silver_telemetry": SILVER_SCHEMA,
    "gold_vehicle_hourly": GOLD_VEHICLE_HOURLY_SCHEMA,
    "gold_zone_hourly": GOLD_ZONE_HOURLY_SCHEMA,
    "gold_vehicle_state": GOLD_VEHICLE_STATE_SCHEMA,
}


@pytest.mark.parametrize("expectation", rules.EXPECTATIONS, ids=lambda e: e.name)
def test_every_expectation_is_well_formed(expectation):
    assert expectation.table in SCHEMAS
    assert isinstance(expectation.action, Action)
    names = set(SCHEMAS[expectation.table].names) | ({"reason"} if expectation.table == "silver_telemetry" else set())
    if expectation.table == "bronze_telemetry":
        names |= rules.DERIVED_COLUMNS  # computed from file names when Bronze is read
    assert set(expectation.columns) <= names, expectation
    if expectation.action is Action.DROP:
        assert expectation.reason in {r.reason for r in rules.QUARANTINE_RULES}
    assert expectation.kind in {
        "not_null",
        "unique",
        "between",
        "in_set",
        "not_in_set",
        "regex",
        "a_ge_b",
        "columns_match",
        "max_share",
        "sum_equals",
        "quarantine",
    }


def test_expectation_names_are_unique_and_every_layer_has_fail_rules():
    names = [e.name for e in rules.EXPECTATIONS]
    assert len(names) == len(set(names))
    for table in SCHEMAS:
        assert rules.expectations_for(table, Action.FAIL), table
    assert {e.reason for e in rules.expectations_for("silver_telemetry", Action.DROP)} == {
        QuarantineReason.INVALID_GPS,
        QuarantineReason.INVALID_SOC,
        QuarantineReason.INVALID_SPEED,
    }


def test_quarantine_schema_keeps_bronze_coordinates():
    for name in ("reason", "bronze_hour", "bronze_file", "payload", "kafka_partition", "kafka_offset", "ingest_ts"):
        assert not QUARANTINE_SCHEMA.field(name).nullable
    assert set(SILVER_SCHEMA.names) < set(QUARANTINE_SCHEMA.names)
