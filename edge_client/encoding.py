"""A tick of fleet state -> the bytes vehicles send (contract section 1).

Two shapes, written with the contract's own msgspec structs so they cannot
drift from what validation expects:

- ``snapshot`` (1a): one message per vehicle per tick with every group.
- ``signal`` (1b): a bandwidth-saving TCU that sends one signal per message
  and only what is worth sending: position and speed every tick while the
  vehicle is in use, ``soc`` every ~30 s, ``odometer`` and ``battery_temp``
  every ~60 s, position every ~5 min while parked, ``ignition`` and
  ``charging`` when they change. Its first tick reports everything.

``mixed`` gives each vehicle one of the two, chosen by the seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import msgspec
import numpy as np

from edge_client.fleet import EARTH_RADIUS_M, Fleet
from lake_schemas.messages import Battery, Diagnostics, Location, Motion, Signal, Snapshot, Status

SNAPSHOT, SIGNAL = "snapshot", "signal"
#: Shape -> share of vehicles that send snapshots.
_SNAPSHOT_SHARE = {"snapshot": 1.0, "signal": 0.0, "mixed": 0.5}

SOC_EVERY_S = 30.0
SLOW_SIGNALS_EVERY_S = 60.0  # odometer, battery_temp
PARKED_POSITION_EVERY_S = 300.0

_ENCODE = msgspec.json.Encoder().encode
_SECONDS: dict[int, str] = {}


def rfc3339_ms(epoch_ms: int) -> str:
    """``2026-03-01T08:00:00.250Z``: RFC 3339, UTC, milliseconds."""
    seconds, ms = divmod(epoch_ms, 1000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        prefix = _SECONDS[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{ms:03d}Z"


def uuid_like_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` version-4-shaped UUID strings drawn from ``rng`` (so a seed repeats them)."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    h = raw.tobytes().hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


@dataclass
class Outbox:
    """The messages of one tick before they are keyed and ordered: parallel lists."""

    vehicle: list[int] = field(default_factory=list)
    value: list[bytes] = field(default_factory=list)
    send_ms: list[int] = field(default_factory=list)
    shape: list[str] = field(default_factory=list)
    #: Message index -> what is wrong with it ("duplicate" or a malformed kind).
    defects: dict[int, str] = field(default_factory=dict)

    def add(self, vehicles: list[int], values: list[bytes], send_ms: list[int], shape: str) -> None:
        self.vehicle += vehicles
        self.value += values
        self.send_ms += send_ms
        self.shape += [shape] * len(values)

    def __len__(self) -> int:
        return len(self.value)

    def keep(self, indices: list[int]) -> None:
        """Keep only the messages at ``indices`` (in that order); only before defects are marked."""
        if self.defects:
            raise ValueError("Outbox.keep after defects were marked would misplace them")
        self.vehicle = [self.vehicle[i] for i in indices]
        self.value = [self.value[i] for i in indices]
        self.send_ms = [self.send_ms[i] for i in indices]
        self.shape = [self.shape[i] for i in indices]

    def finish(self, keys: list[bytes]) -> "MessageBatch":
        """Order by send time (as the uplink delivers them) and key by vehicle id."""
        order = np.argsort(np.asarray(self.send_ms, dtype=np.int64), kind="stable").tolist()
        position = {old: new for new, old in enumerate(order)} if self.defects else {}
        counts = {SNAPSHOT: 0, SIGNAL: 0}
        for i, shape in enumerate(self.shape):
            if i not in self.defects:
                counts[shape] += 1
        return MessageBatch(
            keys=[keys[self.vehicle[i]] for i in order],
            values=[self.value[i] for i in order],
            timestamps_ms=[self.send_ms[i] for i in order],
            defects={position[i]: kind for i, kind in self.defects.items()},
            by_shape=counts,
        )


@dataclass
class MessageBatch:
    """What a tick sends: ``keys[i]``, ``values[i]`` at ``timestamps_ms[i]`` (the
    simulated send time, which becomes the Kafka record timestamp)."""

    keys: list[bytes]
    values: list[bytes]
    timestamps_ms: list[int]
    #: Index -> "duplicate" or the malformed kind (see ``imperfections.MALFORMED_KINDS``).
    defects: dict[int, str]
    #: Well-formed first sends per shape (neither malformed nor duplicates).
    by_shape: dict[str, int]

    def __len__(self) -> int:
        return len(self.values)


class TelemetryEncoder:
    """Encodes the fleet's state, tick after tick, in each vehicle's shape."""

    def __init__(self, fleet: Fleet, shape: str, seed: int, clock_offset_ms: Optional[np.ndarray] = None):
        n = fleet.size
        self.fleet = fleet
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE4C0DE]))
        self.sends_snapshot = self._rng.random(n) < _SNAPSHOT_SHARE[shape]
        self._clock_offset_ms = np.zeros(n, dtype=np.int64) if clock_offset_ms is None else clock_offset_ms
        self._tick_ms = round(fleet.dt_s * 1000)
        # Each vehicle samples at its own moment within the tick, and its periodic
        # signals are out of step with the others'.
        self._phase_ms = self._rng.integers(0, self._tick_ms, n)
        self._period_phase = self._rng.integers(0, 1 << 30, n)
        self._ticks = 0
        self._was_riding = fleet.riding.copy()
        self._was_charging = fleet.charging.copy()
        #: Position reports sent as 0,0 so far.
        self.gps_glitches = 0

    def encode(self, gps_glitch: Optional[np.ndarray] = None) -> Outbox:
        """Messages for the fleet's state now; ``gps_glitch`` marks vehicles whose fix reads 0,0."""
        f, n = self.fleet, self.fleet.size
        event_ms = f.now_ms + self._phase_ms
        # The uplink takes tens to hundreds of milliseconds.
        send_ms = (event_ms + np.minimum(self._rng.lognormal(4.5, 0.6, n), 5000.0).astype(np.int64)).tolist()
        reported_ms = (event_ms + self._clock_offset_ms).tolist()
        glitch = np.zeros(n, dtype=bool) if gps_glitch is None else gps_glitch
        lat, lon = self._gps(glitch)
        out = Outbox()
        snap = np.flatnonzero(self.sends_snapshot)
        if len(snap):
            self._snapshots(out, snap, reported_ms, send_ms, lat, lon)
            self.gps_glitches += int(glitch[snap].sum())
        if len(snap) < n:
            position = self._signals(out, ~self.sends_snapshot, reported_ms, send_ms, lat, lon)
            self.gps_glitches += int((glitch & position).sum())
        self._ticks += 1
        self._was_riding = f.riding.copy()
        self._was_charging = f.charging.copy()
        return out

    def _gps(self, glitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fix as reported: a little noise while moving, held still while parked, 0,0 on a glitch."""
        f = self.fleet
        noise_m = self._rng.normal(0.0, 1.0, (2, f.size)) * (f.gps_accuracy_m / 4.0) * (f.speed_ms > 0)
        lat = f.lat + np.degrees(noise_m[0] / EARTH_RADIUS_M)
        lon = f.lon + np.degrees(noise_m[1] / (EARTH_RADIUS_M * np.cos(np.radians(f.lat))))
        lat = np.where(glitch, 0.0, lat)
        lon = np.where(glitch, 0.0, lon)
        return lat.round(6), lon.round(6)

    def _snapshots(
        self, out: Outbox, idx: np.ndarray, reported_ms: list[int], send_ms: list[int], lat: np.ndarray, lon: np.ndarray
    ) -> None:
        f = self.fleet
        ids = f.vehicle_ids
        riding = f.riding[idx].tolist()
        charging = f.charging[idx].tolist()
        has_error = (f.error_index[idx] >= 0).tolist()
        cols = zip(
            idx.tolist(),
            uuid_like_ids(self._rng, len(idx)),
            lat[idx].tolist(),
            lon[idx].tolist(),
            f.alt_m[idx].tolist(),
            f.gps_accuracy_m[idx].round(1).tolist(),
            f.soc_pct[idx].round(1).tolist(),
            f.voltage_v[idx].round(2).tolist(),
            f.current_a[idx].round(2).tolist(),
            f.battery_temp_c[idx].round(1).tolist(),
            charging,
            f.speed_kmh[idx].round(1).tolist(),
            f.heading_deg[idx].round(1).tolist(),
            f.accel_ms2[idx].round(2).tolist(),
            riding,
            f.odometer_km[idx].round(3).tolist(),
            has_error,
        )
        values = [
            _ENCODE(
                Snapshot(
                    schema_version=1,
                    event_id=event_id,
                    vehicle_id=ids[i],
                    ts=rfc3339_ms(reported_ms[i]),
                    location=Location(la, lo, alt, acc),
                    battery=Battery(soc, volt, amp, temp, chg),
                    motion=Motion(kmh, head, acc2),
                    status=Status(locked=not ride, in_use=ride, ignition=ride, trip_id=f.trip_id(i) if ride else None),
                    diagnostics=Diagnostics(odo, f.error_codes(i) if err else []),
                )
            )
            for i, event_id, la, lo, alt, acc, soc, volt, amp, temp, chg, kmh, head, acc2, ride, odo, err in cols
        ]
        out.add(idx.tolist(), values, [send_ms[i] for i in idx.tolist()], SNAPSHOT)

    def _signals(
        self,
        out: Outbox,
        sends_signal: np.ndarray,
        reported_ms: list[int],
        send_ms: list[int],
        lat: np.ndarray,
        lon: np.ndarray,
    ) -> np.ndarray:
        """Add this tick's signals; return which vehicles reported a position."""
        f, k, dt = self.fleet, self._ticks, self.fleet.dt_s
        first = k == 0

        def every(seconds: float) -> np.ndarray:
            period = max(1, round(seconds / dt))
            return (k + self._period_phase) % period == 0

        in_use = f.riding | self._was_riding  # includes the tick it stops
        position = sends_signal & (first | in_use | every(PARKED_POSITION_EVERY_S))
        slow = sends_signal & (first | every(SLOW_SIGNALS_EVERY_S))
        soc = sends_signal & (first | every(SOC_EVERY_S))
        ignition = sends_signal & (first | (f.riding != self._was_riding))
        charging = sends_signal & (first | (f.charging != self._was_charging))
        plan = [
            ("lat", position, lat, None),
            ("lon", position, lon, None),
            ("speed", position, f.speed_kmh.round(1), None),
            ("soc", soc, None, f.soc_pct.round().astype(np.int64)),
            ("odometer", slow, f.odometer_km.round(3), None),
            ("battery_temp", slow, f.battery_temp_c.round(1), None),
            ("ignition", ignition, None, f.riding.astype(np.int64)),
            ("charging", charging, None, f.charging.astype(np.int64)),
        ]
        ids = f.vehicle_ids
        for name, mask, floats, ints in plan:
            idx = np.flatnonzero(mask).tolist()
            if not idx:
                continue
            if floats is not None:
                values = [
                    _ENCODE(Signal(did=ids[i], timestamp=reported_ms[i], name=name, float_value=v))
                    for i, v in zip(idx, floats[idx].tolist())
                ]
            else:
                values = [
                    _ENCODE(Signal(did=ids[i], timestamp=reported_ms[i], name=name, int_value=v))
                    for i, v in zip(idx, ints[idx].tolist())
                ]
            out.add(idx, values, [send_ms[i] for i in idx], SIGNAL)
        return position
