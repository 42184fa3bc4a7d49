"""Helpers shared by the ingest tests: produce known messages, read Bronze back."""
from __future__ import annotations

import json
import uuid
from collections import Counter

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from beam_pipelines.ingest.options import IngestOptions
from beam_pipelines.ingest.pipeline import run_ingest

HOUR_MS = 3_600_000
T0 = 1772352000000  # 2026-03-01T08:00:00Z


def snapshot(vehicle: str, ts_ms: int) -> bytes:
    return json.dumps({"event_id": str(uuid.uuid4()), "vehicle_id": vehicle, "ts": ts_ms,
                       "battery": {"soc_pct": 50.0}}).encode()


def signal(vehicle: str, ts_ms: int, name: str = "soc") -> bytes:
    return json.dumps({"did": vehicle, "timestamp": ts_ms, "name": name, "int_value": 50}).encode()


def produce(settings, records) -> dict:
    """records: (key, value, timestamp_ms) -> {(partition, offset): value}."""
    from confluent_kafka import Producer

    produced = {}

    def delivered(err, msg):
        assert err is None, err
        produced[(msg.partition(), msg.offset())] = msg.value()

    p = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5})
    for key, value, ts in records:
        p.produce(settings.topic, value=value, key=key, timestamp=ts, on_delivery=delivered)
        p.poll(0)
    assert p.flush(30) == 0
    return produced


def ingest(settings, **overrides):
    opts = dict(lake_root=settings.lake_root, bootstrap=settings.bootstrap, topic=settings.topic,
                dlq_topic=settings.dlq_topic, until_idle=0.5)
    opts.update(overrides)
    return run_ingest(IngestOptions(**opts))


def read(settings, table: str):
    path = f"{settings.lake_root}/bronze/{'telemetry' if table == 'bronze' else '_rejects'}"
    dataset = ds.dataset(path, format="parquet", partitioning="hive", ignore_prefixes=[".", "_"])
    return dataset.to_table()


def offsets_held(settings) -> Counter:
    held = Counter()
    for table in ("bronze", "rejects"):
        try:
            t = read(settings, table)
        except FileNotFoundError:
            continue
        for p, o in zip(t["kafka_partition"].to_pylist(), t["kafka_offset"].to_pylist()):
            held[(p, o)] += 1
    return held


def files(settings, table: str = "telemetry") -> list:
    import glob

    return sorted(glob.glob(f"{settings.lake_root}/bronze/{table}/**/*.parquet", recursive=True))


def parquet_rows(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows
