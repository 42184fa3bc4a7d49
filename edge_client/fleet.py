"""A fleet of scooters, e-bikes and cars, moved one tick at a time.

Every quantity is a numpy array over all vehicles, so one ``step`` costs the
same few dozen array operations for 10 vehicles or 50,000. Each vehicle is a
small state machine::

    PARKED --(a rider takes it)--> RIDING --(trip over, speed 0)--> PARKED
    PARKED --(battery low, charger found)--> CHARGING --(charged)--> PARKED

Physics, kept simple but consistent: speed follows a target with limited
acceleration; position moves along a drifting heading by speed x dt; the
battery delivers rolling + air + inertial power (cars recover some when
braking) and its voltage, current and temperature follow from that power.
The same seed gives the same fleet and the same history.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

PARKED, RIDING, CHARGING = 0, 1, 2
EARTH_RADIUS_M = 6_371_008.8
#: How far from home a motorway trip may lead (the default operating area has a radius of 20 km).
MOTORWAY_LEASH_KM = 35.0
#: Of car trips, how many take the motorway.
MOTORWAY_SHARE = 0.25
_G = 9.81
_AIR_DENSITY = 1.2
ERROR_CODES = ("E12", "E21", "E33", "B07", "M04", "C110")


@dataclass(frozen=True)
class VehicleType:
    """What one kind of vehicle can do. Powers in W, energies in Wh, speeds in km/h."""

    name: str
    share: float  # of the fleet
    max_speed_kmh: float
    cruise_kmh: tuple[float, float]  # a trip's usual speed range
    accel_ms2: float  # best acceleration
    brake_ms2: float  # firm (not emergency) braking
    mass_kg: float  # with rider
    rolling_coeff: float
    drag_area_m2: float  # Cd x frontal area
    motor_share: float  # of the traction power the battery gives (an e-bike rider pedals)
    regen_share: float  # of braking power recovered
    aux_w: float  # lights, controller, IoT while riding
    standby_w: float  # IoT while parked
    capacity_wh: float
    pack_min_v: float  # empty
    pack_max_v: float  # full
    resistance_ohm: float
    heat_capacity_j_k: float
    cooling_s: float  # time constant towards ambient
    charge_w: float
    min_soc_to_ride: float
    mean_trip_s: float
    mean_parked_s: float
    stop_every_s: float  # traffic lights, crossings
    odometer_km: tuple[float, float]  # initial range


VEHICLE_TYPES: tuple[VehicleType, ...] = (
    VehicleType(
        "scooter",
        0.55,
        25.0,
        (15.0, 24.0),
        1.8,
        3.0,
        95.0,
        0.015,
        0.55,
        1.0,
        0.2,
        12.0,
        1.5,
        470.0,
        30.0,
        42.0,
        0.12,
        2200.0,
        1500.0,
        120.0,
        15.0,
        720.0,
        1500.0,
        120.0,
        (0.0, 4000.0),
    ),
    VehicleType(
        "ebike",
        0.30,
        25.0,
        (14.0, 24.0),
        1.2,
        2.5,
        100.0,
        0.008,
        0.45,
        0.5,
        0.0,
        8.0,
        1.0,
        625.0,
        39.0,
        54.6,
        0.15,
        3000.0,
        1500.0,
        150.0,
        15.0,
        1080.0,
        2400.0,
        150.0,
        (0.0, 6000.0),
    ),
    VehicleType(
        "car",
        0.15,
        130.0,
        (30.0, 55.0),
        2.5,
        4.0,
        1600.0,
        0.010,
        0.62,
        1.0,
        0.6,
        600.0,
        8.0,
        52000.0,
        320.0,
        400.0,
        0.10,
        250000.0,
        3600.0,
        11000.0,
        10.0,
        1500.0,
        5400.0,
        90.0,
        (1000.0, 80000.0),
    ),
)
VEHICLE_TYPE_NAMES: tuple[str, ...] = tuple(t.name for t in VEHICLE_TYPES)

# Demand through the day: how likely a parked vehicle is taken, relative to
# the mean, for each UTC+1 hour (Berlin in winter): morning and evening peaks.
_DEMAND_BY_HOUR = np.array(
    [
        0.15,
        0.1,
        0.08,
        0.08,
        0.1,
        0.3,
        0.8,
        1.6,
        2.0,
        1.3,
        1.0,
        1.0,
        1.2,
        1.2,
        1.1,
        1.2,
        1.6,
        2.0,
        1.9,
        1.4,
        1.0,
        0.7,
        0.45,
        0.25,
    ]
)


def vehicle_id(index: int) -> str:
    return f"V{index:06d}"


class Fleet:
    """All vehicles of a simulation and their state now.

    Read the state from the public arrays (one entry per vehicle, in
    ``vehicle_ids`` order); call ``step()`` to move ``dt`` seconds on.
    """

    def __init__(
        self,
        vehicles: int,
        seed: int,
        start_ms: int,
        tick_ms: int = 1000,
        center: tuple[float, float] = (52.52, 13.405),
        radius_km: float = 5.0,
    ):
        self.size = n = int(vehicles)
        self.dt_s = tick_ms / 1000.0
        self.now_ms = int(start_ms)
        self.center = center
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1EE7]))
        rng = self._rng
        shares = np.array([t.share for t in VEHICLE_TYPES])
        self.type_index = rng.choice(len(VEHICLE_TYPES), size=n, p=shares / shares.sum()).astype(np.int8)
        self.vehicle_ids = [vehicle_id(i) for i in range(n)]
        self._spec = {
            name: np.array([getattr(t, name) for t in VEHICLE_TYPES], dtype=float)[self.type_index]
            for name in VehicleType.__dataclass_fields__
            if isinstance(getattr(VEHICLE_TYPES[0], name), float)
        }

        # Homes scatter around the centre, denser near it.
        r_m = rng.gamma(2.0, radius_km * 500.0, n)
        theta = rng.uniform(0, 2 * np.pi, n)
        self.home_lat = center[0] + np.degrees(r_m * np.cos(theta) / EARTH_RADIUS_M)
        self.home_lon = center[1] + np.degrees(r_m * np.sin(theta) / (EARTH_RADIUS_M * np.cos(np.radians(center[0]))))
        self.radius_m = radius_km * 1000.0
        # How far a trip may lead from home before the way turns back: the city, or the region for a
        # motorway trip (which is how a car leaves the operating area, contract section 9's geofence).
        self._leash_m = np.full(n, self.radius_m)
        self.lat = self.home_lat.copy()
        self.lon = self.home_lon.copy()
        self.alt_m = rng.normal(36.0, 4.0, n).round(1)
        self.heading_deg = rng.uniform(0, 360, n)
        self.speed_ms = np.zeros(n)
        self.accel_ms2 = np.zeros(n)
        self.gps_accuracy_m = rng.uniform(3.0, 8.0, n)

        self.soc_pct = rng.uniform(20.0, 100.0, n)
        lo, hi = np.array([t.odometer_km for t in VEHICLE_TYPES]).T
        self.odometer_km = rng.uniform(lo[self.type_index], hi[self.type_index])
        self.ambient_c = float(rng.normal(7.0, 3.0))
        self.battery_temp_c = self.ambient_c + rng.normal(0.0, 1.0, n)
        self.current_a = np.zeros(n)
        self.voltage_v = self._open_circuit_v()

        self.state = np.full(n, PARKED, dtype=np.int8)
        self.trip_seq = np.zeros(n, dtype=np.int64)
        self._trip_left_s = np.zeros(n)
        self._cruise_ms = np.zeros(n)
        self._stop_left_s = np.zeros(n)
        self._charge_target = np.zeros(n)
        self.error_index = np.full(n, -1, dtype=np.int8)
        self._error_left_s = np.zeros(n)
        # A low battery at the start may already be on its charger.
        self.state[(self.soc_pct < 30) & (rng.random(n) < 0.5)] = CHARGING
        self._charge_target[:] = rng.uniform(85.0, 100.0, n)
        self._battery(0.0, self.speed_ms)  # current and voltage as the pack stands

    # -- what the vehicles report ------------------------------------------------------

    @property
    def type_names(self) -> list[str]:
        return [VEHICLE_TYPE_NAMES[i] for i in self.type_index]

    @property
    def max_speed_kmh(self) -> np.ndarray:
        return self._spec["max_speed_kmh"]

    @property
    def speed_kmh(self) -> np.ndarray:
        return self.speed_ms * 3.6

    @property
    def riding(self) -> np.ndarray:
        return self.state == RIDING

    @property
    def charging(self) -> np.ndarray:
        return self.state == CHARGING

    def trip_id(self, i: int) -> str:
        return f"{self.vehicle_ids[i]}-T{self.trip_seq[i]}"

    def error_codes(self, i: int) -> list[str]:
        code = self.error_index[i]
        return [] if code < 0 else [ERROR_CODES[code]]

    # -- one tick ---------------------------------------------------------------------

    def step(self) -> None:
        """Advance every vehicle by ``dt_s`` seconds."""
        dt = self.dt_s
        self.now_ms += round(dt * 1000)
        self._start_and_end_stays(dt)
        speed_before = self.speed_ms
        self._drive(dt)
        self._move((speed_before + self.speed_ms) / 2.0 * dt)
        self._battery(dt, speed_before)
        self._errors(dt)
        # A trip is over once the vehicle has stopped after its time ran out.
        ended = self.riding & (self.speed_ms == 0.0) & ((self._trip_left_s <= 0) | (self.soc_pct < 3.0))
        self.state[ended] = PARKED
        self.accel_ms2[~self.riding] = 0.0

    def _start_and_end_stays(self, dt: float) -> None:
        s, rng, n = self._spec, self._rng, self.size
        hour = (_dt.datetime.fromtimestamp(self.now_ms / 1000, _dt.timezone.utc).hour + 1) % 24
        parked = self.state == PARKED
        take = (
            parked
            & (self.soc_pct > s["min_soc_to_ride"])
            & (rng.random(n) < dt * _DEMAND_BY_HOUR[hour] / s["mean_parked_s"])
        )
        if take.any():
            self.state[take] = RIDING
            self.trip_seq[take] += 1
            k = int(take.sum())
            self._trip_left_s[take] = np.clip(
                rng.exponential(s["mean_trip_s"][take]), 120.0, 4 * s["mean_trip_s"][take]
            )
            cruise = np.array([t.cruise_kmh for t in VEHICLE_TYPES])[self.type_index[take]]
            cruise_kmh = rng.uniform(cruise[:, 0], cruise[:, 1])
            # Now and then a car leaves the city on the motorway.
            motorway = (self.type_index[take] == VEHICLE_TYPE_NAMES.index("car")) & (rng.random(k) < MOTORWAY_SHARE)
            cruise_kmh[motorway] = rng.uniform(90.0, 125.0, int(motorway.sum()))
            self._leash_m[take] = np.where(motorway, MOTORWAY_LEASH_KM * 1000.0, self.radius_m)
            self._cruise_ms[take] = np.minimum(cruise_kmh, s["max_speed_kmh"][take]) / 3.6
            self._stop_left_s[take] = 0.0
        # A low battery waits for a charger (a van collects scooters, a driver plugs the car in).
        plug = parked & ~take & (self.soc_pct < 30.0) & (rng.random(n) < dt / 1200.0)
        self.state[plug] = CHARGING
        self._charge_target[plug] = rng.uniform(85.0, 100.0, int(plug.sum()))
        full = (self.state == CHARGING) & (self.soc_pct >= self._charge_target)
        self.state[full] = PARKED

    def _drive(self, dt: float) -> None:
        s, rng, n = self._spec, self._rng, self.size
        riding = self.riding
        self._trip_left_s[riding] -= dt
        self._stop_left_s = np.maximum(self._stop_left_s - dt, 0.0)
        stop = riding & (rng.random(n) < dt / s["stop_every_s"])
        self._stop_left_s[stop] = rng.uniform(8.0, 45.0, int(stop.sum()))
        going = riding & (self._trip_left_s > 0) & (self._stop_left_s == 0) & (self.soc_pct >= 3.0)
        # The rider wavers around the cruise speed.
        target = np.where(going, self._cruise_ms * rng.uniform(0.85, 1.05, n), 0.0)
        wanted = (target - self.speed_ms) / 2.0  # close the gap in about 2 s
        accel = np.clip(wanted + rng.normal(0.0, 0.15, n) * (self.speed_ms > 0), -s["brake_ms2"], s["accel_ms2"])
        new_speed = np.clip(self.speed_ms + accel * dt, 0.0, s["max_speed_kmh"] / 3.6)
        new_speed[~riding] = 0.0
        new_speed[new_speed < 0.05] = 0.0
        self.accel_ms2 = (new_speed - self.speed_ms) / dt
        self.speed_ms = new_speed

    def _move(self, distance_m: np.ndarray) -> None:
        rng, n = self._rng, self.size
        moving = distance_m > 0
        # The heading drifts; at a crossing the rider may turn; far from home, the way leads back.
        drift = rng.normal(0.0, 4.0, n) * np.sqrt(self.dt_s)
        turn = (rng.random(n) < self.dt_s / 60.0) * rng.choice([-90.0, 90.0], n)
        turn[self._leash_m > self.radius_m] = 0.0  # the motorway has no crossings
        away_m = self._distance_m(self.lat, self.lon, self.home_lat, self.home_lon)
        home_bearing = self._bearing_deg(self.lat, self.lon, self.home_lat, self.home_lon)
        back = (
            ((home_bearing - self.heading_deg + 180.0) % 360.0 - 180.0)
            * (away_m > self._leash_m)
            * min(1.0, 0.2 * self.dt_s)
        )
        self.heading_deg = np.where(moving, (self.heading_deg + drift + turn + back) % 360.0, self.heading_deg)
        rad = np.radians(self.heading_deg)
        self.lat = self.lat + np.degrees(distance_m * np.cos(rad) / EARTH_RADIUS_M)
        self.lon = self.lon + np.degrees(distance_m * np.sin(rad) / (EARTH_RADIUS_M * np.cos(np.radians(self.lat))))
        self.odometer_km = self.odometer_km + distance_m / 1000.0

    def _battery(self, dt: float, speed_before: np.ndarray) -> None:
        s = self._spec
        v = (speed_before + self.speed_ms) / 2.0
        resist = v * (s["mass_kg"] * _G * s["rolling_coeff"] + 0.5 * _AIR_DENSITY * s["drag_area_m2"] * v * v)
        inertial = s["mass_kg"] * self.accel_ms2 * v
        traction = (resist + inertial) * s["motor_share"]
        drawn = np.where(traction > 0, traction / 0.88, traction * s["regen_share"])
        power_w = np.where(self.riding, np.maximum(drawn + s["aux_w"], -s["charge_w"]), s["standby_w"])
        charging = self.charging
        # Chargers slow down above 80 %, as lithium packs need.
        taper = np.clip((100.0 - self.soc_pct) / 20.0, 0.1, 1.0)
        power_w = np.where(charging, -s["charge_w"] * taper, power_w)
        self.soc_pct = np.clip(self.soc_pct - power_w * dt / 3600.0 / s["capacity_wh"] * 100.0, 0.0, 100.0)
        ocv = self._open_circuit_v()
        self.current_a = -power_w / ocv  # negative while the pack discharges
        self.voltage_v = ocv + self.current_a * s["resistance_ohm"]
        heat_w = self.current_a**2 * s["resistance_ohm"] + 0.03 * np.abs(power_w)
        self.battery_temp_c = self.battery_temp_c + dt * (
            heat_w / s["heat_capacity_j_k"] - (self.battery_temp_c - self.ambient_c) / s["cooling_s"]
        )

    def _open_circuit_v(self) -> np.ndarray:
        s = self._spec
        f = self.soc_pct / 100.0
        shape = 0.15 * (1.0 - np.exp(-10.0 * f)) + 0.85 * f  # steep when nearly empty, then linear
        return s["pack_min_v"] + (s["pack_max_v"] - s["pack_min_v"]) * shape

    def _errors(self, dt: float) -> None:
        rng, n = self._rng, self.size
        self._error_left_s -= dt
        self.error_index[self._error_left_s <= 0] = -1
        # About one fault per vehicle every 8 hours, lasting minutes.
        new = (self.error_index < 0) & (rng.random(n) < dt / 28_800.0)
        k = int(new.sum())
        if k:
            self.error_index[new] = rng.integers(0, len(ERROR_CODES), k)
            self._error_left_s[new] = rng.exponential(600.0, k)

    @staticmethod
    def _distance_m(lat1, lon1, lat2, lon2) -> np.ndarray:
        """Equirectangular distance: exact enough within a city."""
        x = np.radians(lon2 - lon1) * np.cos(np.radians((lat1 + lat2) / 2.0))
        y = np.radians(lat2 - lat1)
        return EARTH_RADIUS_M * np.hypot(x, y)

    @staticmethod
    def _bearing_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
        x = np.radians(lon2 - lon1) * np.cos(np.radians((lat1 + lat2) / 2.0))
        y = np.radians(lat2 - lat1)
        return np.degrees(np.arctan2(x, y)) % 360.0
