"""Run a fleet in simulated time and send what it says.

``simulate(config, sender)`` is the whole of it; ``message_batches(config)``
yields what it would send, tick by tick, for callers (and tests) that want
the messages themselves.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

from edge_client.config import SimulationConfig
from edge_client.encoding import SIGNAL, SNAPSHOT, MessageBatch, Outbox, TelemetryEncoder
from edge_client.fleet import Fleet
from edge_client.imperfections import DUPLICATE, FieldFaults
from edge_client.senders import Sender


@dataclass
class SimulationStats:
    vehicles: int = 0
    ticks: int = 0
    simulated_seconds: float = 0.0
    #: Well-formed first sends per shape.
    by_shape: dict[str, int] = field(default_factory=lambda: {SNAPSHOT: 0, SIGNAL: 0})
    bad: int = 0  # malformed messages sent
    duplicates: int = 0  # retries of a message already sent
    gps_glitches: int = 0
    skewed_vehicles: int = 0
    silences: int = 0  # uplink losses begun
    silenced: int = 0  # messages never sent because their vehicle was silent
    first_timestamp_ms: Optional[int] = None
    last_timestamp_ms: Optional[int] = None
    wall_seconds: float = 0.0

    @property
    def messages(self) -> int:
        """Everything sent: well-formed, malformed and duplicates."""
        return sum(self.by_shape.values()) + self.bad + self.duplicates

    def add(self, batch: MessageBatch) -> None:
        for shape, count in batch.by_shape.items():
            self.by_shape[shape] += count
        duplicates = sum(1 for kind in batch.defects.values() if kind == DUPLICATE)
        self.duplicates += duplicates
        self.bad += len(batch.defects) - duplicates
        if batch.timestamps_ms:
            first, last = min(batch.timestamps_ms), max(batch.timestamps_ms)
            self.first_timestamp_ms = first if self.first_timestamp_ms is None else min(first, self.first_timestamp_ms)
            self.last_timestamp_ms = last if self.last_timestamp_ms is None else max(last, self.last_timestamp_ms)

    def summary(self) -> str:
        rate = self.messages / self.wall_seconds if self.wall_seconds > 0 else 0.0
        return (
            f"sent {self.messages:,} messages from {self.vehicles:,} vehicles over "
            f"{_duration(self.simulated_seconds)} simulated in {self.wall_seconds:.1f} s ({rate:,.0f}/s): "
            f"{self.by_shape[SNAPSHOT]:,} snapshot, {self.by_shape[SIGNAL]:,} signal, "
            f"{self.bad:,} malformed, {self.duplicates:,} duplicates, {self.gps_glitches:,} GPS glitches, "
            f"{self.skewed_vehicles:,} {'vehicle' if self.skewed_vehicles == 1 else 'vehicles'} with skewed clocks"
            + (f", {self.silences:,} uplink losses ({self.silenced:,} messages never sent)" if self.silences else "")
        )


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def build_fleet(config: SimulationConfig) -> Fleet:
    """The fleet a run of ``config`` simulates (its ids and types are what the registry needs)."""
    return Fleet(
        config.vehicles, config.seed, config.start_ms, config.tick_ms, center=(config.city_lat, config.city_lon)
    )


def message_batches(config: SimulationConfig, stats: Optional[SimulationStats] = None) -> Iterator[MessageBatch]:
    """One ``MessageBatch`` per tick, then one with the retries still pending at the end."""
    fleet = build_fleet(config)
    faults = FieldFaults(config.imperfections, config.seed, fleet.size)
    encoder = TelemetryEncoder(fleet, config.shape, config.seed, faults.clock_offset_ms)
    keys = [v.encode() for v in fleet.vehicle_ids]
    if stats is not None:
        stats.vehicles, stats.skewed_vehicles = fleet.size, faults.skewed_vehicles
    for _ in range(config.ticks):
        out = encoder.encode(faults.gps_glitch_mask(fleet.size))
        silenced = faults.silence(out, fleet.now_ms, config.tick_ms / 1000.0)
        faults.corrupt(out)
        faults.schedule_retries(out)
        faults.add_due_retries(out, before_ms=fleet.now_ms + config.tick_ms)
        if stats is not None:
            stats.gps_glitches = encoder.gps_glitches
            stats.silences, stats.silenced = faults.silences, stats.silenced + silenced
        yield out.finish(keys)
        fleet.step()
    tail = Outbox()  # the fleet is done; only the retries in flight remain
    faults.add_due_retries(tail)
    if len(tail):
        yield tail.finish(keys)


def simulate(config: SimulationConfig, sender: Sender, progress: bool = True) -> SimulationStats:
    """Simulate ``config`` and send every message through ``sender``; flush, but not close, it.

    ``progress`` shows a bar on stderr when it is a terminal. With
    ``config.realtime`` each tick waits for its moment on the wall clock.
    """
    from tqdm import tqdm

    stats = SimulationStats()
    started = time.monotonic()
    bar = tqdm(
        total=config.ticks,
        unit="tick",
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        disable=not progress or not sys.stderr.isatty(),
        desc="simulate",
    )
    send = sender.send
    try:
        for tick, batch in enumerate(message_batches(config, stats)):
            if config.realtime:
                wait = started + tick * config.tick_ms / 1000.0 - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            for key, value, ts in zip(batch.keys, batch.values, batch.timestamps_ms):
                send(key, value, ts)
            stats.add(batch)
            if tick < config.ticks:
                stats.ticks += 1
                bar.update(1)
                if tick % 16 == 0:
                    bar.set_postfix_str(f"{stats.messages:,} msgs", refresh=False)
        sender.flush()
    finally:
        bar.close()
    stats.simulated_seconds = config.ticks * config.tick_ms / 1000.0
    stats.wall_seconds = time.monotonic() - started
    return stats
