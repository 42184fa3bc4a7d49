"""The hot path's logic, free of Beam and PostgreSQL: one Kafka partition's vehicles.

``PartitionState`` holds, per vehicle (``VehicleState``): the latest value of
every Silver field with the (event_ts, event_id) it came from, the dedup
horizon, the open 1- and 5-minute windows, the positions those windows'
distances need, the alerts, the last-seen times and the geofence flag; and,
for the partition, its zone windows. ``apply(records)`` runs a batch of Kafka
records through the contract's rules, in offset order; ``tick(now_ms)``
opens processing-time ``offline`` alerts; ``drain()`` hands back what changed
(rows to upsert, alert events) since the last drain.

Everything is a function of the records (values, Kafka timestamps, offsets)
and, for ``tick``, of the clock: replaying a topic rebuilds the same rows and
the same alert ids (``lake_schemas.hot.alert_id``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from lake_schemas import geohash
from lake_schemas.geofence import OperatingArea
from lake_schemas.hot import (
    DEFAULT_RULES,
    SEVERITY,
    AlertRule,
    HotRules,
    alert_id,
    correct_event_ms,
    fields_of,
    quarantine_reason,
)
from lake_schemas.rules import EARTH_RADIUS_KM, GEOHASH_PRECISION, MAX_LEG_SPEED_KMH
from lake_schemas.validation import Accepted, record_timestamp_refused, validate_and_decode

__all__ = ["PartitionState", "VehicleState", "Drained", "AlertEvent", "haversine"]

LIVE_FIELDS = (
    "lat",
    "lon",
    "alt_m",
    "accuracy_m",
    "soc_pct",
    "voltage_v",
    "current_a",
    "battery_temp_c",
    "charging",
    "speed_kmh",
    "heading_deg",
    "accel_ms2",
    "locked",
    "in_use",
    "ignition",
    "trip_id",
    "odometer_km",
    "error_codes",
    "zone_id",
)


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Section 4's distance (km), one leg at a time."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


def leg_km(a: tuple, b: tuple) -> float:
    """The leg from position ``a`` to ``b`` ((ts, event_id, lat, lon)): 0 when left out by section 4's rule."""
    dt_ms = b[0] - a[0]
    if dt_ms <= 0:
        return 0.0  # two rows sharing one event_ts
    d = haversine(a[2], a[3], b[2], b[3])
    return 0.0 if d / (dt_ms / 3_600_000) > MAX_LEG_SPEED_KMH else d


@dataclass
class Window:
    start: int
    size: int
    count: int = 0
    soc_n: int = 0
    soc_sum: float = 0.0
    soc_min: Optional[float] = None
    soc_max: Optional[float] = None
    speed_n: int = 0
    speed_sum: float = 0.0
    speed_max: Optional[float] = None
    distance_km: float = 0.0
    last_pos: Optional[tuple] = None  # the latest (ts, event_id, lat, lon) in (ts, id) order
    stale_distance: bool = False  # a position arrived out of order: recompute from the positions

    def add(self, fields: dict, pos: Optional[tuple], legs: dict) -> None:
        """Count one event; ``legs``: the legs to ``pos`` computed for this event's other windows (shared)."""
        self.count += 1
        soc = fields.get("soc_pct")
        if soc is not None:
            self.soc_n += 1
            self.soc_sum += soc
            self.soc_min = soc if self.soc_min is None else min(self.soc_min, soc)
            self.soc_max = soc if self.soc_max is None else max(self.soc_max, soc)
        speed = fields.get("speed_kmh")
        if speed is not None:
            self.speed_n += 1
            self.speed_sum += speed
            self.speed_max = speed if self.speed_max is None else max(self.speed_max, speed)
        if pos is None:
            return
        if self.last_pos is None:
            self.last_pos = pos
        elif pos[:2] > self.last_pos[:2]:
            km = legs.get(self.last_pos)
            if km is None:
                km = legs[self.last_pos] = leg_km(self.last_pos, pos)
            self.distance_km += km
            self.last_pos = pos
        else:
            self.stale_distance = True

    def row(self, vehicle_id: str, positions: list) -> tuple:
        if self.stale_distance:
            lo = bisect.bisect_left(positions, (self.start,))
            hi = bisect.bisect_left(positions, (self.start + self.size,))
            inside = positions[lo:hi]
            self.distance_km = sum(leg_km(a, b) for a, b in zip(inside, inside[1:]))
            self.last_pos = inside[-1] if inside else None
            self.stale_distance = False
        return (
            vehicle_id,
            self.start,
            self.count,
            self.soc_min,
            None if not self.soc_n else self.soc_sum / self.soc_n,
            self.soc_max,
            None if not self.speed_n else self.speed_sum / self.speed_n,
            self.speed_max,
            self.distance_km,
        )


@dataclass
class Alert:
    alert_id: str
    rule: str
    opened_at: int
    resolved_at: Optional[int] = None
    seq: int = 0  # transitions published so far - 1
    details: dict = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class AlertEvent:
    alert_id: str
    seq: int
    vehicle_id: str
    rule: str
    state: str  # "open" | "resolved"
    at: int
    details: dict


@dataclass
class VehicleState:
    vehicle_id: str
    values: dict = field(default_factory=dict)  # column -> value
    value_at: dict = field(default_factory=dict)  # column -> (event_ts, event_id) of its value
    last_event: Optional[tuple] = None  # (event_ts, event_id) of the newest Silver row
    last_offset: int = -1
    last_seen_ms: int = 0  # newest Kafka record timestamp (the ingest clock)
    heard_event_ts: Optional[int] = None  # newest event time of any accepted message (offline's clock)
    watermark: int = -(2**62)  # newest corrected event_ts
    seen: dict = field(default_factory=dict)  # event_id -> event_ts, within the horizon
    windows: dict = field(default_factory=dict)  # (size, start) -> Window
    positions: list = field(default_factory=list)  # sorted (ts, event_id, lat, lon) the open windows need
    pending_halves: dict = field(default_factory=dict)  # signal ts -> {"lat"|"lon": (value, event_id)}
    alerts: dict = field(default_factory=dict)  # rule -> Alert
    inside: Optional[bool] = None


@dataclass
class Drained:
    """What changed since the previous drain: rows for the hot store, events for the alerts topic."""

    live: list = field(default_factory=list)
    windows: dict = field(default_factory=dict)  # size -> rows
    zones: list = field(default_factory=list)
    alerts: list = field(default_factory=list)
    events: list = field(default_factory=list)  # AlertEvent
    days: set = field(default_factory=set)  # event days the rows fall in (their partitions must exist)

    def __bool__(self) -> bool:
        return bool(self.live or any(self.windows.values()) or self.zones or self.alerts or self.events)


class PartitionState:
    """One Kafka partition's vehicles (a vehicle's messages all go to one partition: the key is its id)."""

    def __init__(self, topic: str, partition: int, next_offset: int = 0, rules: HotRules = DEFAULT_RULES):
        self.topic = topic
        self.partition = partition
        self.next_offset = next_offset  # the first offset not yet applied
        #: While below this offset, the records are a replay of committed outputs (set by whoever loads a state).
        self.replay_until: Optional[int] = None
        self.rules = rules
        self.vehicles: dict[str, VehicleState] = {}
        self.zone_windows: dict[tuple, list] = {}  # (zone_id, start) -> [vehicle ids, events]
        self.watermark = -(2**62)
        self.counts: dict[str, int] = {}
        self._dirty_vehicles: set = set()
        self._dirty_windows: set = set()  # (vehicle, size, start)
        self._dirty_zones: set = set()
        self._dirty_alerts: dict = {}  # alert_id -> (vehicle, Alert)
        self._events: list = []

    # ------------------------------------------------------------------ counting
    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    # ------------------------------------------------------------------ a batch
    def apply(self, offsets: list, timestamps: list, values: list, area: OperatingArea, now_ms: int) -> None:
        """Apply the records at or after ``next_offset`` (a replayed prefix is skipped), in offset order."""
        decoded = []
        for offset, record_ms, value in zip(offsets, timestamps, values):
            if offset < self.next_offset:
                continue
            self.next_offset = offset + 1
            self._count("records")
            if record_timestamp_refused(record_ms, now_ms) is not None:
                self._count("rejected.record_timestamp_out_of_range")
                continue
            verdict, message = validate_and_decode(value)  # one decode for the check and the values
            if not isinstance(verdict, Accepted):
                self._count(f"rejected.{verdict.reason.value}")
                continue
            try:
                event_id, fields, signal_name = fields_of(message)
            except Exception:  # noqa: BLE001 - validated already; a decoder disagreement must not stop the stream
                self._count("rejected.not_json")
                continue
            event_ms, _ = correct_event_ms(verdict.event_ts_ms, record_ms)
            if event_id is None:
                self._count("rejected.missing_field")
                continue
            decoded.append((offset, record_ms, verdict.vehicle_id, event_id, event_ms, fields, signal_name))
        # Zone ids for the whole batch at once (geohash is vectorised).
        lat = np.array([d[5].get("lat", np.nan) for d in decoded], dtype=float)
        lon = np.array([d[5].get("lon", np.nan) for d in decoded], dtype=float)
        ok = ~(np.isnan(lat) | np.isnan(lon)) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        zones: list[Optional[str]] = [None] * len(decoded)
        if ok.any():
            idx = np.nonzero(ok)[0]
            for i, z in zip(idx, geohash.encode(lat[idx], lon[idx], GEOHASH_PRECISION)):
                zones[int(i)] = str(z)
        touched = set()
        for (offset, record_ms, vehicle, event_id, event_ms, fields, signal_name), zone in zip(decoded, zones):
            touched.add(vehicle)
            self._event(offset, record_ms, vehicle, event_id, event_ms, fields, signal_name, zone, area)
        self._prune(touched)

    def _vehicle(self, vehicle_id: str) -> VehicleState:
        v = self.vehicles.get(vehicle_id)
        if v is None:
            v = self.vehicles[vehicle_id] = VehicleState(vehicle_id)
        return v

    def _event(
        self,
        offset: int,
        record_ms: int,
        vehicle_id: str,
        event_id: str,
        event_ms: int,
        fields: dict,
        signal_name: Optional[str],
        zone: Optional[str],
        area: OperatingArea,
    ) -> None:
        rules = self.rules
        v = self._vehicle(vehicle_id)
        v.last_seen_ms = max(v.last_seen_ms, record_ms)
        previous_heard = v.heard_event_ts
        if v.heard_event_ts is None or event_ms > v.heard_event_ts:
            v.heard_event_ts = event_ms
        self._dirty_vehicles.add(vehicle_id)
        horizon_start = v.watermark - rules.horizon_ms
        if event_id in v.seen:
            self._count("duplicates")
            return
        if event_ms < horizon_start:
            self._count("too_late")
            if quarantine_reason(fields) is None and signal_name not in ("lat", "lon"):
                self._latest(v, event_ms, event_id, fields, zone, offset)
            return
        v.seen[event_id] = event_ms
        if signal_name in ("lat", "lon"):
            # Silver pairs a lat and a lon signal of one timestamp into one position row (the lat's id).
            halves = v.pending_halves.setdefault(event_ms, {})
            halves[signal_name] = (fields.get(signal_name), event_id)
            if len(halves) < 2:
                return
            del v.pending_halves[event_ms]
            event_id = halves["lat"][1]
            fields = {"lat": halves["lat"][0], "lon": halves["lon"][0]}
            self._count("paired_positions")
            if zone is None and fields["lat"] is not None and fields["lon"] is not None:
                if abs(fields["lat"]) <= 90 and abs(fields["lon"]) <= 180:
                    zone = str(
                        geohash.encode(np.array([fields["lat"]]), np.array([fields["lon"]]), GEOHASH_PRECISION)[0]
                    )
        reason = quarantine_reason(fields)
        if reason is not None:
            self._count(f"quarantined.{reason}")
            self._offline_gap(v, previous_heard, event_ms)
            return
        self._count("events")
        newest = v.last_event is None or (event_ms, event_id) > v.last_event
        self._latest(v, event_ms, event_id, fields, zone, offset)
        if event_ms > v.watermark:
            v.watermark = event_ms
            self.watermark = max(self.watermark, event_ms)
        pos = None
        if "lat" in fields and "lon" in fields:
            pos = (event_ms, event_id, fields["lat"], fields["lon"])
            bisect.insort(v.positions, pos)
        legs: dict = {}
        for size in rules.window_sizes_ms:
            start = event_ms - event_ms % size
            w = v.windows.get((size, start))
            if w is None:
                w = v.windows[(size, start)] = Window(start, size)
            w.add(fields, pos, legs)
            self._dirty_windows.add((vehicle_id, size, start))
        if zone is not None:
            zsize = rules.zone_window_ms
            zstart = event_ms - event_ms % zsize
            if zstart + zsize + rules.allowed_lateness_ms > self.watermark:
                zw = self.zone_windows.setdefault((zone, zstart), [set(), 0])
                zw[0].add(vehicle_id)
                zw[1] += 1
                self._dirty_zones.add((zone, zstart))
        self._offline_gap(v, previous_heard, event_ms)
        if newest:
            self._alert_rules(v, event_ms, fields, area)

    def _latest(
        self, v: VehicleState, event_ms: int, event_id: str, fields: dict, zone: Optional[str], offset: int
    ) -> None:
        at = (event_ms, event_id)
        cells = dict(fields)
        if zone is not None:
            cells["zone_id"] = zone
        if v.last_event is None or at > v.last_event:
            # The newest event (the common case): its non-null values win everywhere, no per-column look.
            v.values.update(cells)
            v.value_at.update(dict.fromkeys(cells, at))
            v.last_event = at
            v.last_offset = offset
            return
        for column, value in cells.items():
            if value is None:
                continue
            held = v.value_at.get(column)
            if held is None or at > held:
                v.values[column] = value
                v.value_at[column] = at
        if v.last_event is None or at > v.last_event:
            v.last_event = at
            v.last_offset = offset

    # ------------------------------------------------------------------ alerts
    def _open(self, v: VehicleState, rule: AlertRule, at: int, details: dict) -> None:
        alert = v.alerts.get(rule.value)
        if alert is not None and alert.open:
            return
        if (
            alert is not None
            and alert.resolved_at is not None
            and at - alert.resolved_at <= self.rules.reopen_within_ms
        ):
            alert.resolved_at = None  # reopened: the same alert, no storm
            alert.seq += 1
            alert.details = details
        else:
            alert = Alert(alert_id(v.vehicle_id, rule.value, at), rule.value, at, details=details)
            v.alerts[rule.value] = alert
        self._transition(v, alert, "open", at)

    def _resolve(self, v: VehicleState, rule: AlertRule, at: int) -> None:
        alert = v.alerts.get(rule.value)
        if alert is None or not alert.open:
            return
        alert.resolved_at = max(at, alert.opened_at)
        alert.seq += 1
        self._transition(v, alert, "resolved", alert.resolved_at)

    def _transition(self, v: VehicleState, alert: Alert, state: str, at: int) -> None:
        self._dirty_alerts[alert.alert_id] = (v.vehicle_id, alert)
        self._dirty_vehicles.add(v.vehicle_id)
        self._events.append(
            AlertEvent(alert.alert_id, alert.seq, v.vehicle_id, alert.rule, state, at, dict(alert.details))
        )
        self._count(f"alerts.{alert.rule}.{state}")

    def _offline_gap(self, v: VehicleState, previous_heard: Optional[int], event_ms: int) -> None:
        """The next message after a silence resolves ``offline`` (opening it first when no timer did)."""
        rules = self.rules
        alert = v.alerts.get(AlertRule.OFFLINE.value)
        if alert is not None and alert.open:
            self._resolve(v, AlertRule.OFFLINE, event_ms)
            return
        if previous_heard is not None and event_ms - previous_heard > rules.offline_after_ms:
            opened = previous_heard + rules.offline_after_ms
            self._open(
                v,
                AlertRule.OFFLINE,
                opened,
                {"last_event_ts_ms": previous_heard, "silent_ms": event_ms - previous_heard},
            )
            self._resolve(v, AlertRule.OFFLINE, event_ms)

    def _alert_rules(self, v: VehicleState, event_ms: int, fields: dict, area: OperatingArea) -> None:
        rules = self.rules
        if "soc_pct" in fields or "charging" in fields:
            soc = v.values.get("soc_pct")
            charging = v.values.get("charging") is True
            if soc is not None:
                if soc < rules.low_battery_open_pct and not charging:
                    self._open(v, AlertRule.LOW_BATTERY, event_ms, {"soc_pct": soc, "charging": charging})
                elif soc >= rules.low_battery_resolve_pct or charging:
                    self._resolve(v, AlertRule.LOW_BATTERY, event_ms)
        if "lat" in fields and "lon" in fields:
            lat, lon = fields["lat"], fields["lon"]
            v.inside = area.contains(lat, lon)
            if v.inside:
                self._resolve(v, AlertRule.GEOFENCE, event_ms)
            else:
                self._open(v, AlertRule.GEOFENCE, event_ms, {"lat": lat, "lon": lon})

    def tick(self, now_ms: int) -> int:
        """Processing-time ``offline``: vehicles heard from recently (wall clock) but silent for the rule's time."""
        rules = self.rules
        opened = 0
        for v in self.vehicles.values():
            if v.heard_event_ts is None:
                continue
            silent = now_ms - v.last_seen_ms
            if silent <= rules.offline_after_ms or silent > rules.offline_live_window_ms:
                continue
            alert = v.alerts.get(AlertRule.OFFLINE.value)
            if alert is not None and alert.open:
                continue
            at = v.heard_event_ts + rules.offline_after_ms
            self._open(v, AlertRule.OFFLINE, at, {"last_event_ts_ms": v.heard_event_ts, "detected_by": "clock"})
            opened += 1
        return opened

    # ------------------------------------------------------------------ state upkeep
    def _prune(self, touched: Iterable[str]) -> None:
        """Forget what the horizon left behind, for the vehicles a batch moved (the others' watermarks stood still)."""
        rules = self.rules
        for vehicle_id in touched:
            v = self.vehicles[vehicle_id]
            horizon_start = v.watermark - rules.horizon_ms
            seen = v.seen
            while seen:  # insertion order is nearly event order: expire from the front
                first = next(iter(seen))
                if seen[first] >= horizon_start:
                    break
                del seen[first]
            final = [
                key
                for key, w in v.windows.items()
                if w.start + w.size + rules.allowed_lateness_ms <= v.watermark
                and (v.vehicle_id, w.size, w.start) not in self._dirty_windows
            ]
            for key in final:
                del v.windows[key]
            keep_from = min((w.start for w in v.windows.values()), default=horizon_start)
            if v.positions and v.positions[0][0] < keep_from:
                v.positions = v.positions[bisect.bisect_left(v.positions, (keep_from,)) :]
            for ts in [t for t in v.pending_halves if t < horizon_start]:
                del v.pending_halves[ts]
                self._count("quarantined.invalid_gps")  # a lat or lon signal whose other half never came
            for rule, alert in list(v.alerts.items()):
                if alert.resolved_at is not None and alert.resolved_at + rules.reopen_within_ms < v.watermark:
                    del v.alerts[rule]
        zsize = self.rules.zone_window_ms
        for key in [k for k in self.zone_windows if k[1] + zsize + rules.allowed_lateness_ms <= self.watermark]:
            if key not in self._dirty_zones:
                del self.zone_windows[key]

    # ------------------------------------------------------------------ output
    def drain(self) -> Drained:
        """The rows and events changed since the last drain (then forgotten)."""
        out = Drained(windows={size: [] for size in self.rules.window_sizes_ms})
        for vehicle_id in sorted(self._dirty_vehicles):
            v = self.vehicles[vehicle_id]
            if v.last_event is None:
                continue
            offline = v.alerts.get(AlertRule.OFFLINE.value)
            out.live.append(
                (
                    vehicle_id,
                    *(v.values.get(c) for c in LIVE_FIELDS),
                    v.last_event[1],
                    v.last_event[0],
                    v.last_seen_ms,
                    not (offline is not None and offline.open),
                    v.inside,
                    self.partition,
                    v.last_offset,
                )
            )
        for vehicle_id, size, start in sorted(self._dirty_windows):
            v = self.vehicles[vehicle_id]
            w = v.windows.get((size, start))
            if w is not None:
                out.windows[size].append(w.row(vehicle_id, v.positions))
                out.days.add(start // 86_400_000)
        for zone, start in sorted(self._dirty_zones):
            zw = self.zone_windows.get((zone, start))
            if zw is not None:
                out.zones.append((zone, start, self.partition, len(zw[0]), zw[1]))
                out.days.add(start // 86_400_000)
        for aid in sorted(self._dirty_alerts):
            vehicle_id, alert = self._dirty_alerts[aid]
            out.alerts.append(
                (
                    alert.alert_id,
                    vehicle_id,
                    alert.rule,
                    SEVERITY[AlertRule(alert.rule)],
                    alert.opened_at,
                    alert.resolved_at,
                    alert.details,
                )
            )
            out.days.add(alert.opened_at // 86_400_000)
        out.events = list(self._events)
        self._dirty_vehicles.clear()
        self._dirty_windows.clear()
        self._dirty_zones.clear()
        self._dirty_alerts.clear()
        self._events.clear()
        return out

    def discard_pending_output(self) -> None:
        """Forget what changed (a replayed prefix whose rows the store already holds)."""
        self.drain()
