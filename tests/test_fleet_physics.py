"""The simulated fleet behaves like vehicles: limits, inertia, energy, distance."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from edge_client.fleet import CHARGING, PARKED, RIDING, VEHICLE_TYPES, Fleet
from lake_schemas.messages import VEHICLE_ID_PATTERN

START_MS = 1_772_352_000_000  # 2026-03-01T08:00:00Z: morning peak, plenty of trips
TICKS = 3600


def haversine_m(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(a))


@pytest.fixture(scope="module")
def history():
    """One simulated hour of 300 vehicles, every tick's state stacked: arrays [tick, vehicle]."""
    fleet = Fleet(300, seed=7, start_ms=START_MS)
    names = [
        "lat",
        "lon",
        "speed_ms",
        "accel_ms2",
        "heading_deg",
        "soc_pct",
        "voltage_v",
        "current_a",
        "battery_temp_c",
        "odometer_km",
        "state",
        "trip_seq",
        "error_index",
    ]
    rows = {name: [] for name in names}
    for _ in range(TICKS):
        for name in names:
            rows[name].append(getattr(fleet, name).copy())
        fleet.step()
    h = {name: np.stack(values) for name, values in rows.items()}
    h["fleet"] = fleet
    return h


def test_types_are_mixed_and_ids_follow_the_contract():
    fleet = Fleet(4000, seed=3, start_ms=START_MS)
    shares = np.bincount(fleet.type_index, minlength=3) / fleet.size
    for spec, share in zip(VEHICLE_TYPES, shares):
        assert abs(share - spec.share) < 0.04, (spec.name, share)
    assert len(set(fleet.vehicle_ids)) == fleet.size
    assert all(re.match(VEHICLE_ID_PATTERN, v) for v in fleet.vehicle_ids)
    assert set(fleet.type_names) == {"scooter", "ebike", "car"}


def test_homes_scatter_around_the_city_centre():
    fleet = Fleet(2000, seed=1, start_ms=START_MS, center=(48.137, 11.575))  # Munich
    distance_km = haversine_m(48.137, 11.575, fleet.lat, fleet.lon) / 1000
    assert np.median(distance_km) < 8
    assert distance_km.max() < 60
    assert distance_km.std() > 1  # not all on one spot


def test_speeds_stay_within_each_types_limit(history):
    fleet = history["fleet"]
    kmh = history["speed_ms"] * 3.6
    assert kmh.min() >= 0
    assert np.all(kmh.max(axis=0) <= fleet.max_speed_kmh + 1e-9)
    is_car = fleet.type_index == [t.name for t in VEHICLE_TYPES].index("car")
    assert kmh[:, is_car].max() > 40  # cars do drive faster than bikes
    assert kmh[:, ~is_car].max() > 15  # and the bikes do move


def test_acceleration_is_limited_per_type(history):
    fleet = history["fleet"]
    accel_limit = fleet._spec["accel_ms2"]
    brake_limit = fleet._spec["brake_ms2"]
    dv = np.diff(history["speed_ms"], axis=0)  # dt = 1 s
    assert np.all(dv <= accel_limit + 1e-9)
    assert np.all(dv >= -brake_limit - 0.05)  # 0.05 m/s: a crawl is rounded to a stop
    # Inertia: nobody jumps from standstill to cruising in one second.
    assert np.max(dv) < 3.0


def test_parked_vehicles_stand_still(history):
    state, lat, lon, speed = history["state"], history["lat"], history["lon"], history["speed_ms"]
    still = (state[:-1] != RIDING) & (state[1:] != RIDING)
    assert still.sum() > 100_000
    assert np.all(speed[1:][still] == 0)
    assert np.all(lat[1:][still] == lat[:-1][still])
    assert np.all(lon[1:][still] == lon[:-1][still])


def test_states_follow_the_state_machine(history):
    state, trips = history["state"], history["trip_seq"]
    seen = set(zip(state[:-1].ravel().tolist(), state[1:].ravel().tolist()))
    assert (PARKED, RIDING) in seen and (RIDING, PARKED) in seen
    assert (PARKED, CHARGING) in seen
    assert (RIDING, CHARGING) not in seen and (CHARGING, RIDING) not in seen
    # A trip starts exactly when a vehicle leaves PARKED for RIDING.
    starts = (state[:-1] == PARKED) & (state[1:] == RIDING)
    assert np.array_equal(np.diff(trips, axis=0) == 1, starts)
    assert (trips[-1] > 0).mean() > 0.3  # a morning peak: many vehicles were taken


def test_charging_ends_with_a_full_battery():
    # A scooter takes hours to charge: look at six hours, one report a minute.
    fleet = Fleet(300, seed=7, start_ms=START_MS, tick_ms=60_000)
    finished = []
    for _ in range(360):
        was_charging = fleet.charging.copy()
        fleet.step()
        done = was_charging & (fleet.state == PARKED)
        finished.extend(fleet.soc_pct[done].tolist())
        assert not (was_charging & fleet.riding).any()
    assert len(finished) > 5
    assert min(finished) >= 85.0


def test_trips_end_at_standstill(history):
    state, speed = history["state"], history["speed_ms"]
    ends = (state[:-1] == RIDING) & (state[1:] == PARKED)
    assert ends.sum() > 20
    assert np.all(speed[1:][ends] == 0)


def test_positions_move_by_speed_times_dt(history):
    speed, lat, lon = history["speed_ms"], history["lat"], history["lon"]
    moved_m = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    expected_m = (speed[:-1] + speed[1:]) / 2 * 1.0
    assert np.allclose(moved_m, expected_m, rtol=0.01, atol=0.01)
    assert moved_m.max() > 10  # someone drove faster than 36 km/h


def test_heading_drifts_only_while_moving(history):
    heading, speed = history["heading_deg"], history["speed_ms"]
    turn = np.abs((np.diff(heading, axis=0) + 180) % 360 - 180)
    moving = (speed[:-1] + speed[1:]) > 0
    assert np.all(turn[~moving] == 0)
    assert 0.5 < np.median(turn[moving]) < 20  # drifts, mostly gently
    assert np.all((heading >= 0) & (heading < 360))


def test_odometer_grows_with_distance_driven(history):
    odo, lat, lon = history["odometer_km"], history["lat"], history["lon"]
    assert np.all(np.diff(odo, axis=0) >= 0)
    driven_km = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]).sum(axis=0) / 1000
    gained_km = odo[-1] - odo[0]
    assert gained_km.sum() > 50
    assert np.allclose(gained_km, driven_km, rtol=0.01, atol=1e-3)


def test_battery_drains_while_riding_and_fills_while_charging(history):
    state, soc, current = history["state"], history["soc_pct"], history["current_a"]
    dsoc = np.diff(soc, axis=0)
    riding = (state[:-1] == RIDING) & (state[1:] == RIDING)
    charging = (state[:-1] == CHARGING) & (state[1:] == CHARGING) & (soc[:-1] < 99.9)
    parked = (state[:-1] == PARKED) & (state[1:] == PARKED)
    assert riding.sum() > 10_000 and charging.sum() > 1_000
    assert np.all(dsoc[charging] > 0)
    assert np.all(dsoc[parked] <= 0)  # standby draws a little
    # Over each vehicle's rides the pack loses charge (a car may regain a little when braking).
    per_vehicle = np.where(riding, dsoc, 0).sum(axis=0)
    rode = riding.sum(axis=0) > 120
    assert np.all(per_vehicle[rode] < 0)
    assert np.all(current[1:][riding & (np.diff(history["speed_ms"], axis=0) >= 0)] < 0)  # discharging
    assert np.all(current[1:][charging] > 0)
    assert np.all((soc >= 0) & (soc <= 100))


def test_voltage_and_temperature_are_consistent(history):
    fleet, state = history["fleet"], history["state"]
    volts, temp, soc = history["voltage_v"], history["battery_temp_c"], history["soc_pct"]
    lo, hi = fleet._spec["pack_min_v"], fleet._spec["pack_max_v"]
    assert np.all(volts > lo * 0.9) and np.all(volts < hi * 1.05)
    # Voltage rises with charge for a vehicle at rest.
    parked = state == PARKED
    for v in range(0, 300, 37):
        s, u = soc[parked[:, v], v], volts[parked[:, v], v]
        if len(s) > 10 and np.ptp(s) > 0.5:
            assert np.corrcoef(s, u)[0, 1] > 0.9
    assert np.all(np.abs(temp - fleet.ambient_c) < 25)
    assert temp[-1][state[-1] == RIDING].mean() > temp[0].mean()  # work warms the pack


def test_error_codes_come_and_go(history):
    errors = history["error_index"]
    assert 0 < (errors >= 0).mean() < 0.2
    assert ((errors[:-1] >= 0) & (errors[1:] < 0)).any()  # and clear again


def test_same_seed_same_fleet_other_seed_other_fleet():
    def run(seed):
        fleet = Fleet(200, seed=seed, start_ms=START_MS)
        for _ in range(300):
            fleet.step()
        return fleet

    a, b, c = run(5), run(5), run(6)
    for name in ("lat", "lon", "speed_ms", "soc_pct", "odometer_km", "state", "type_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.lat, c.lat)


def test_fifty_thousand_vehicles_step_in_well_under_a_second():
    fleet = Fleet(50_000, seed=1, start_ms=START_MS)
    started = time.perf_counter()
    for _ in range(5):
        fleet.step()
    assert (time.perf_counter() - started) / 5 < 0.25
    assert fleet.riding.sum() > 0
