"""The hot path's rules on a scripted fleet (the engine alone), geofences, and Silver's rules twice written."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from beam_pipelines.stream.engine import PartitionState
from lake_schemas.geofence import GeofenceError, default_area, parse_geojson
from lake_schemas.hot import alert_id, correct_event_ms, quarantine_reason
from lake_schemas.rules import correct_event_time, haversine_km, quarantine_reasons
from support.hot_fleet import EXPECTED_WINDOW, INSIDE, OUTSIDE, T0, scripted_fleet, snap

NOW = T0 + 3_600_000


def run_engine(records, batch=7):
    """Apply ``records`` in batches of ``batch``; every drained output, in order."""
    state = PartitionState("t", 0)
    area = default_area()
    events, windows, alerts = [], {}, {}
    for i in range(0, len(records), batch):
        chunk = records[i : i + batch]
        state.apply(list(range(i, i + len(chunk))), [r[2] for r in chunk], [r[1] for r in chunk], area, NOW)
        out = state.drain()
        events += out.events
        for size, rows in out.windows.items():
            for row in rows:
                windows[(size, row[0], row[1])] = row
        for row in out.alerts:
            alerts[row[0]] = row
    return state, events, windows, alerts


def test_scripted_fleet_raises_exactly_the_expected_alerts():
    records, expected = scripted_fleet()
    _, events, _, alerts = run_engine(records)
    got = sorted((e.vehicle_id, e.rule, e.state, e.at) for e in events)
    assert got == sorted(expected)
    low = [e for e in events if e.rule == "low_battery"]
    assert len({e.alert_id for e in low}) == 1, "the reopened alert is the same alert"
    assert [e.seq for e in low] == [0, 1, 2]
    assert low[0].alert_id == alert_id("LOW", "low_battery", T0 + 110_000)
    row = alerts[low[0].alert_id]
    assert row[4] == T0 + 110_000 and row[5] is None, "reopened: open again, opened_at kept"


def test_batch_boundaries_do_not_change_anything():
    records, _ = scripted_fleet()
    one = run_engine(records, batch=1)
    many = run_engine(records, batch=1000)
    assert [(e.alert_id, e.seq, e.state) for e in one[1]] == [(e.alert_id, e.seq, e.state) for e in many[1]]
    assert one[2] == many[2]


def test_window_by_hand_with_a_duplicate_a_late_event_and_one_too_late():
    records, _ = scripted_fleet()
    state, _, windows, _ = run_engine(records)
    w = windows[(60_000, "WIN", T0)]
    assert w[2] == EXPECTED_WINDOW["event_count"]
    assert (w[3], w[4], w[5]) == pytest.approx(
        (EXPECTED_WINDOW["soc_min"], EXPECTED_WINDOW["soc_avg"], EXPECTED_WINDOW["soc_max"])
    )
    assert (w[6], w[7]) == pytest.approx((EXPECTED_WINDOW["speed_avg"], EXPECTED_WINDOW["speed_max"]))
    pts = np.array(EXPECTED_WINDOW["points"])
    by_hand = float(haversine_km(pts[:-1, 0], pts[:-1, 1], pts[1:, 0], pts[1:, 1]).sum())
    assert w[8] == pytest.approx(by_hand, rel=1e-12)
    five = windows[(300_000, "WIN", T0)]
    assert five[2] == 4 + 4  # the first minute plus 60, 120, 180, 240 s
    assert state.counts["duplicates"] == 1
    assert state.counts["too_late"] == 1


def test_signals_pair_into_one_position_and_merge_into_the_latest_state():
    def sig(name, ts, value):
        return json.dumps({"did": "S1", "timestamp": ts, "name": name, "float_value": value}).encode()

    values = [sig("lat", T0, 52.52), sig("soc", T0, 10.0), sig("lon", T0, 13.405), sig("charging", T0 + 1, 1)]
    state = PartitionState("t", 0)
    state.apply([0, 1, 2, 3], [T0] * 4, values, default_area(), NOW)
    out = state.drain()
    live = out.live[0]
    assert live[1:3] == (52.52, 13.405)
    assert state.counts["paired_positions"] == 1 and state.counts["events"] == 3  # position, soc, charging
    assert [(e.rule, e.state) for e in out.events] == [("low_battery", "open"), ("low_battery", "resolved")]


def test_every_bad_input_is_counted_with_its_reason_and_the_partition_goes_on():
    bad = [
        b"",
        b"x" * 20_000,
        b"\xff\xfe",
        b"not json",
        b"[1]",
        b'{"a": 1}',
        b'{"event_id": "e", "ts": 1}',
        b'{"did": "D", "timestamp": 1772352000000, "name": "warp", "int_value": 1}',
        snap("Q", T0, **{"location": {"lat": 95.0, "lon": 13.0}}),
        snap("Q", T0 + 1, battery={"soc_pct": 130.0}),
    ]
    values = [*bad, snap("OK", T0)]
    stamps = [T0] * len(values)
    stamps[-2] = 10  # 1970: a hostile record timestamp
    state = PartitionState("t", 0)
    state.apply(list(range(len(values))), stamps, values, default_area(), NOW)
    rejected = {k: n for k, n in state.counts.items() if k.startswith(("rejected.", "quarantined."))}
    assert sum(rejected.values()) == len(bad)
    assert {
        "rejected.empty",
        "rejected.too_large",
        "rejected.not_utf8",
        "rejected.not_json",
        "rejected.not_object",
        "rejected.unknown_shape",
        "rejected.missing_field",
        "rejected.unknown_signal",
        "quarantined.invalid_gps",
        "rejected.record_timestamp_out_of_range",
    } <= set(rejected)
    assert state.counts["events"] == 1 and state.next_offset == len(values)


def test_offline_by_the_clock_opens_once_and_the_next_message_resolves_it():
    state = PartitionState("t", 0)
    now = 1_800_000_000_000
    state.apply([0], [now], [snap("V", now, **location(*INSIDE))], default_area(), now)
    state.drain()
    assert state.tick(now + 9 * 60_000) == 0
    assert state.tick(now + 11 * 60_000) == 1
    assert state.tick(now + 12 * 60_000) == 0, "one open alert per vehicle and rule"
    state.apply([1], [now + 12 * 60_000], [snap("V", now + 12 * 60_000)], default_area(), now + 12 * 60_000)
    events = state.drain().events
    assert [(e.state, e.at) for e in events] == [("open", now + 10 * 60_000), ("resolved", now + 12 * 60_000)]
    # a replay of old data is judged by event time only
    assert state.tick(now + 30 * 24 * 3_600_000) == 0


def location(lat, lon):
    return {"location": {"lat": lat, "lon": lon}}


def test_geofence_polygons_holes_and_errors():
    area = default_area()
    assert area.contains(*INSIDE) and not area.contains(*OUTSIDE)
    square = {
        "type": "Polygon",
        "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]],
    }
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": square}]}
    a = parse_geojson(fc)
    assert a.contains(2, 2) and not a.contains(5, 5) and not a.contains(11, 5)
    assert a.contains(0, 5), "on an edge counts as inside"
    for bad in ({"type": "Point", "coordinates": [0, 0]}, {"type": "Polygon", "coordinates": [[[0, 0]]]}, []):
        with pytest.raises(GeofenceError):
            parse_geojson(bad)


@pytest.mark.parametrize(
    "fields",
    [
        {"lat": 52.0, "lon": 13.0},
        {"lat": 0.0, "lon": 0.0},
        {"lat": 52.0},
        {"lon": 13.0},
        {"lat": 90.0, "lon": 180.0},
        {"lat": 90.0001, "lon": 1.0},
        {"lat": 1.0, "lon": -180.5},
        {"soc_pct": 100.0},
        {"soc_pct": -0.1},
        {"soc_pct": float("nan")},
        {"speed_kmh": 300.0},
        {"speed_kmh": 300.1},
        {"lat": 95.0, "lon": 1.0, "soc_pct": 101.0},
        {},
    ],
)
def test_quarantine_one_event_at_a_time_agrees_with_silver(fields):
    columns = {c: pa.array([fields.get(c)], pa.float64()) for c in ("lat", "lon", "soc_pct", "speed_kmh")}
    assert quarantine_reason(fields) == quarantine_reasons(pa.table(columns))[0].as_py()


@pytest.mark.parametrize("skew_ms", [0, 300_000, 300_001, -7 * 86_400_000, -7 * 86_400_000 - 1, 10**12])
def test_time_correction_one_event_at_a_time_agrees_with_silver(skew_ms):
    ingest = T0
    fixed, corrected = correct_event_time(pa.array([ingest + skew_ms], pa.int64()), pa.array([ingest], pa.int64()))
    ms, flag = correct_event_ms(ingest + skew_ms, ingest)
    assert (ms, flag) == (fixed.cast(pa.int64())[0].as_py(), corrected[0].as_py())
    assert not math.isnan(ms)


def test_the_geofence_grid_answers_exactly_as_ray_casting():
    import random

    rng = random.Random(5)
    polygon = default_area().polygons[0]
    x0, y0, x1, y1 = polygon.bbox
    for _ in range(20_000):
        lon, lat = rng.uniform(x0 - 0.01, x1 + 0.01), rng.uniform(y0 - 0.01, y1 + 0.01)
        inside_bbox = x0 <= lon <= x1 and y0 <= lat <= y1
        assert polygon.contains(lon, lat) == (inside_bbox and polygon._ray_cast(lon, lat)), (lat, lon)
