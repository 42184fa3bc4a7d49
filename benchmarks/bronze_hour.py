"""A realistic Bronze hour for the batch benchmarks, written straight from the simulator.

``build_bronze_hour(lake_root, events)`` runs the ``edge_client`` fleet
(mixed shape: half the vehicles send snapshots, half fragmented signals) for
up to one simulated hour, passes every message through the ingest's own
``validate_message`` and writes what it accepts the way the ingest does:
one zstd Parquet file per Kafka partition and pass, named
``BronzeFileName``, plus the hour's ``_COMPLETE`` marker. No broker: Kafka
would only add minutes and change nothing Silver sees.

What makes it realistic, on top of the fleet's own physics:

- redeliveries (the simulator's retries: identical bytes a few seconds later);
- vehicles whose clocks are hours off (ahead: Silver corrects their times;
  behind: kept, on the previous ``event_date`` when it crosses midnight);
- GPS fixes that read 0,0, lat signals whose lon never came, and readings
  outside the contract's ranges (``soc_pct`` over 100, ``speed_kmh`` over
  300): every quarantine reason;
- vehicles missing from the registry (``vehicle_type`` becomes ``unknown``).

Malformed messages are left out: the ingest sends them to the rejects, never
to Bronze, so Silver would not see them.

``tests/bronze_builder.py`` builds hand-made rows one dict at a time, which
is right for the scenario tests and far too slow for a million events; this
module builds columns, and writes each file as soon as a partition has its
rows: what it holds at once is bounded by the file size, not by ``events``
(20M events are some 3 GB of JSON).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
import zlib
from dataclasses import dataclass, field

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edge_client.config import Imperfections, SimulationConfig, parse_start
from edge_client.simulate import build_fleet, message_batches
from lake_core.registry import upsert_vehicles
from lake_schemas import BRONZE_SCHEMA, BronzeFileName, LakePaths
from lake_schemas.paths import COMPLETE_MARKER, HOUR_MS, format_hour, hour_of_ms
from lake_schemas.validation import Accepted, validate_message

__all__ = ["BronzeInput", "BronzeFaults", "build_bronze_hour", "copy_inputs"]

START = "2026-03-01T08:00:00Z"
TOPIC = "vehicle-telemetry"
#: Messages per vehicle and second in the mixed shape (measured: snapshots 1, signal TCUs about 0.6).
_MESSAGES_PER_VEHICLE_S = 0.8
#: Simulated seconds used of the hour: the rest leaves room for the uplink delay and retries.
_SIMULATED_S = 3300


@dataclass(frozen=True)
class BronzeFaults:
    """Rates of what goes wrong; the defaults give a few percent of quarantine, under the gate's 10%."""

    duplicate_rate: float = 0.01  # per message: a retry resends it
    clock_skew_rate: float = 0.03  # per vehicle: clock hours off
    gps_glitch_rate: float = 0.005  # per position: reads 0,0
    out_of_range_rate: float = 0.004  # per snapshot, soc or speed signal: soc > 100 or speed > 300
    lone_half_rate: float = 0.002  # per lon signal: lost, so its lat arrives alone
    unregistered_share: float = 0.05  # vehicles missing from the registry


@dataclass
class BronzeInput:
    lake_root: str
    hour: str  # "2026-03-01T08"
    rows: int  # Bronze rows written
    files: int
    vehicles: int
    registered: int
    counts: dict = field(default_factory=dict)  # what was injected, by kind
    seconds: float = 0.0

    def describe(self) -> str:
        c = self.counts
        return (
            f"bronze {self.hour}: {self.rows:,} rows in {self.files} files from {self.vehicles:,} vehicles "
            f"({self.registered:,} registered): {c.get('snapshot', 0):,} snapshots, {c.get('signal', 0):,} "
            f"signals, {c.get('duplicate', 0):,} redeliveries, {c.get('skewed_vehicles', 0)} vehicles with "
            f"skewed clocks, {c.get('gps_glitch', 0):,} GPS glitches, {c.get('out_of_range', 0):,} "
            f"out-of-range readings, {c.get('lone_half', 0):,} lone lat signals; built in {self.seconds:.1f}s"
        )


#: How the simulator's encoder writes a 0,0 fix (snapshot, and the lat half of a signal pair).
_GLITCH_SNAPSHOT = b'"lat":0.0,"lon":0.0'
_GLITCH_SIGNAL = b'"name":"lat","float_value":0.0}'
_LON_SIGNAL = b'"name":"lon"'
_DECODE = msgspec.json.decode
_ENCODE = msgspec.json.encode


def _spoil(value: bytes, rng: np.random.Generator):
    """A reading outside the contract's range (snapshot soc/speed, soc or speed signal), or None."""
    doc = _DECODE(value)
    if "event_id" in doc:
        if rng.random() < 0.5 and isinstance(doc.get("battery"), dict):
            doc["battery"]["soc_pct"] = round(float(rng.uniform(100.5, 130.0)), 1)
        elif isinstance(doc.get("motion"), dict):
            doc["motion"]["speed_kmh"] = round(float(rng.uniform(300.5, 400.0)), 1)
        else:
            return None
    elif doc.get("name") == "soc":
        doc.pop("float_value", None)
        doc["int_value"] = int(rng.integers(101, 140))
    elif doc.get("name") == "speed":
        doc["float_value"] = round(float(rng.uniform(300.5, 400.0)), 1)
    else:
        return None
    return _ENCODE(doc)


def _draw(value: bytes, seed: int) -> float:
    """A number in [0, 1) that depends only on the message's bytes (and the seed)."""
    return zlib.crc32(value, seed) / 2**32


def _vehicle_count(events: int) -> int:
    return max(10, -(-events // int(_MESSAGES_PER_VEHICLE_S * _SIMULATED_S)))


def build_bronze_hour(
    lake_root: str,
    events: int,
    seed: int = 7,
    partitions: int = 8,
    rows_per_file: int = 50_000,
    faults: BronzeFaults = BronzeFaults(),
    progress=print,
) -> BronzeInput:
    """Write one complete Bronze hour of about ``events`` rows, and the fleet's registry, under ``lake_root``."""
    started = time.perf_counter()
    start_ms = parse_start(START)
    hour_end = hour_of_ms(start_ms) + HOUR_MS
    vehicles = _vehicle_count(events)
    config = SimulationConfig(
        vehicles=vehicles,
        duration_s=float(_SIMULATED_S),
        shape="mixed",
        seed=seed,
        start_ms=start_ms,
        imperfections=Imperfections(
            duplicate_rate=faults.duplicate_rate,
            clock_skew_rate=faults.clock_skew_rate,
            gps_glitch_rate=faults.gps_glitch_rate,
            bad_rate=0.0,
        ),
    )
    counts = {
        "snapshot": 0,
        "signal": 0,
        "duplicate": 0,
        "out_of_range": 0,
        "lone_half": 0,
        "rejected": 0,
        "gps_glitch": 0,
    }
    # Offset-ordered rows per Kafka partition, written out as soon as a file's worth is there:
    # what is held at once is at most ``partitions * rows_per_file`` messages, whatever ``events``.
    writer = _HourWriter(lake_root, hour_of_ms(start_ms), partitions, rows_per_file)
    partition_of: dict = {}
    kept = 0
    report_every = max(events // 5, 1)
    for batch in message_batches(config):
        duplicate = {i for i, kind in batch.defects.items() if kind == "duplicate"}
        for i, (key, value, ts) in enumerate(zip(batch.keys, batch.values, batch.timestamps_ms)):
            if ts >= hour_end:
                continue
            # Faults are drawn from the message's own bytes, so a redelivery (same bytes)
            # shares its original's fate: spoiled the same way, or lost too.
            draw = _draw(value, seed)
            if draw < faults.lone_half_rate and _LON_SIGNAL in value:
                counts["lone_half"] += i not in duplicate
                continue
            if draw >= 1.0 - faults.out_of_range_rate:
                spoiled = _spoil(value, np.random.default_rng([seed, int(draw * 2**32)]))
                if spoiled is not None:
                    value = spoiled
                    counts["out_of_range"] += i not in duplicate
            verdict = validate_message(value)
            if not isinstance(verdict, Accepted):
                counts["rejected"] += 1
                continue
            p = partition_of.get(key)
            if p is None:
                p = partition_of[key] = zlib.crc32(key) % partitions
            writer.add(p, ts, key, value, verdict.vehicle_id, verdict.event_ts_ms)
            counts["duplicate" if i in duplicate else verdict.shape] += 1
            if _GLITCH_SNAPSHOT in value or _GLITCH_SIGNAL in value:
                counts["gps_glitch"] += 1
            kept += 1
            if kept % report_every == 0:
                progress(f"  simulated {kept:,} of {events:,} Bronze rows ({time.perf_counter() - started:.0f}s)")
            if kept >= events:
                break
        if kept >= events:
            break

    files = writer.close()
    fleet = build_fleet(config)
    registered = [i for i in range(fleet.size) if (i * 7919 + seed) % 1000 >= faults.unregistered_share * 1000]
    upsert_vehicles(
        lake_root,
        [fleet.vehicle_ids[i] for i in registered],
        [fleet.type_names[i] for i in registered],
        registered_at_ms=start_ms - 86_400_000,
    )
    from edge_client.imperfections import FieldFaults

    counts["skewed_vehicles"] = FieldFaults(config.imperfections, seed, fleet.size).skewed_vehicles
    return BronzeInput(
        lake_root,
        format_hour(hour_of_ms(start_ms)),
        kept,
        len(files),
        vehicles,
        len(registered),
        counts,
        time.perf_counter() - started,
    )


class _HourWriter:
    """Bronze files of one hour, one per ``rows_per_file`` rows of a partition, then the ``_COMPLETE`` marker."""

    def __init__(self, lake_root: str, hour_ms: int, partitions: int, rows_per_file: int):
        self.hour_ms, self.rows_per_file = hour_ms, rows_per_file
        self.directory = LakePaths(lake_root).bronze_hour(hour_ms)
        os.makedirs(self.directory, exist_ok=True)
        self.pending: dict = {p: ([], [], [], [], []) for p in range(partitions)}
        self.next_offset = dict.fromkeys(range(partitions), 0)
        self.written: list = []

    def add(self, partition: int, ts: int, key: bytes, value: bytes, vehicle_id: str, event_ms) -> None:
        columns = self.pending[partition]
        for column, item in zip(columns, (ts, key, value, vehicle_id, event_ms)):
            column.append(item)
        if len(columns[0]) >= self.rows_per_file:
            self._flush(partition)

    def _flush(self, p: int) -> None:
        stamps, keys, payloads, vids, event_ms = self.pending[p]
        n, first = len(stamps), self.next_offset[p]
        if n == 0:
            return
        table = pa.Table.from_arrays(
            [
                pa.array([TOPIC] * n, pa.string()),
                pa.array([p] * n, pa.int32()),
                pa.array(np.arange(first, first + n), pa.int64()),
                pa.array(stamps, pa.int64()).cast(BRONZE_SCHEMA.field("ingest_ts").type),
                pa.array(keys, pa.binary()).cast(pa.string()),
                pa.array(payloads, pa.binary()).cast(pa.string()),
                pa.array(vids, pa.string()),
                pa.array(event_ms, pa.int64()).cast(BRONZE_SCHEMA.field("event_ts").type),
            ],
            schema=BRONZE_SCHEMA,
        )
        name = str(BronzeFileName(p, first, first + n - 1, 1, 1))
        pq.write_table(
            table, f"{self.directory}/{name}", compression="zstd", use_dictionary=["kafka_topic", "vehicle_id", "key"]
        )
        self.written.append(name)
        self.next_offset[p] = first + n
        self.pending[p] = ([], [], [], [], [])

    def close(self) -> list:
        """Write what is left, then the marker; the files' names."""
        for p in self.pending:
            self._flush(p)
        marker = {
            "hour": format_hour(self.hour_ms),
            "completed_by": "benchmarks.bronze_hour",
            "completed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": [{"table": "bronze_telemetry", "file": n} for n in sorted(self.written)],
        }
        with open(f"{self.directory}/{COMPLETE_MARKER}", "w") as f:
            json.dump(marker, f, indent=1)
        return self.written


def copy_inputs(source_root: str, target_root: str, tables=("bronze_telemetry", "dims_vehicles")) -> None:
    """A fresh lake holding ``source_root``'s ``tables`` (nothing else), for one timed run."""
    import shutil

    paths, target = LakePaths(source_root), LakePaths(target_root)
    for name in tables:
        shutil.copytree(paths.table(name), target.table(name))
