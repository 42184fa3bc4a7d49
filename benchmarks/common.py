"""Shared benchmark plumbing: an embedded broker and a pre-produced topic."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid

from edge_client.config import Imperfections, SimulationConfig
from edge_client.senders import KafkaSender
from edge_client.simulate import simulate
from lake.local import broker
from lake_core import kafka_admin
from lake_core.processes import free_port


@contextlib.contextmanager
def kafka(bootstrap: str | None):
    """An external Kafka when given, else a fresh embedded broker for the run."""
    if bootstrap:
        yield bootstrap
        return
    state = tempfile.mkdtemp(prefix="lake-bench-broker-")
    info = broker.start_broker(state, port=free_port())
    try:
        yield info.bootstrap
    finally:
        broker.stop_broker(state)


def produce_snapshots(bootstrap: str, events: int, partitions: int = 8, vehicles: int = 1000) -> tuple[str, int, int]:
    """A new topic holding ``events`` snapshot messages; returns (topic, messages, raw JSON bytes)."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(bootstrap, [topic, f"{topic}-dlq"], partitions)
    seconds = max(1, -(-events // vehicles))
    config = SimulationConfig(
        vehicles=vehicles, duration_s=float(seconds), shape="snapshot", seed=7, imperfections=Imperfections.none()
    )
    sender = _CountingSender(KafkaSender(bootstrap, topic), limit=events)
    started = time.perf_counter()
    simulate(config, sender, progress=False)
    sender.close()
    print(
        f"produced {sender.count:,} snapshot messages ({sender.bytes / 1e6:,.0f} MB of JSON) in "
        f"{time.perf_counter() - started:.1f}s to {topic} ({partitions} partitions)",
        flush=True,
    )
    return topic, sender.count, sender.bytes


class _CountingSender:
    def __init__(self, inner, limit: int):
        self.inner, self.limit, self.count, self.bytes = inner, limit, 0, 0

    def send(self, key, value, timestamp_ms):
        if self.count < self.limit:
            self.inner.send(key, value, timestamp_ms)
            self.count += 1
            self.bytes += len(value)

    def flush(self):
        self.inner.flush()

    def close(self):
        self.inner.close()


def dir_bytes(path: str, suffix: str = ".parquet") -> int:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files if f.endswith(suffix))
    return total
