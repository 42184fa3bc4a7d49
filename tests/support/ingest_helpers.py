"""Helpers shared by the ingest tests: produce known messages, read Bronze back."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import uuid
from collections import Counter, defaultdict

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from beam_pipelines.ingest.options import IngestOptions
from beam_pipelines.ingest.pipeline import run_ingest
from lake_schemas import BronzeFileName
from lake_schemas.paths import partition_hour_ms

T0 = 1772352000000  # 2026-03-01T08:00:00Z
TABLE_DIRS = {"bronze": "telemetry", "rejects": "_rejects"}


def snapshot(vehicle: str, ts_ms: int, ts=None, **extra) -> bytes:
    """A snapshot; ``ts`` overrides the event time field (an RFC 3339 string, say)."""
    return json.dumps(
        {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "vehicle_id": vehicle,
            "ts": ts_ms if ts is None else ts,
            "battery": {"soc_pct": 50.0},
            **extra,
        }
    ).encode()


def signal(vehicle: str, ts_ms: int, name: str = "soc") -> bytes:
    return json.dumps({"did": vehicle, "timestamp": ts_ms, "name": name, "int_value": 50}).encode()


def produce(settings, records) -> dict:
    """records: ``(key, value, timestamp_ms)`` or ``(key, value, timestamp_ms, partition)``
    -> ``{(partition, offset): value}`` as the broker acknowledged them."""
    return dict(zip(produce_indexed(settings, records), (r[1] for r in records)))


def produce_indexed(settings, records) -> list:
    """Like ``produce``; returns the ``(partition, offset)`` of each record, in order."""
    from confluent_kafka import Producer

    positions = [None] * len(records)

    def delivered(err, msg, index):
        assert err is None, err
        positions[index] = (msg.partition(), msg.offset())

    p = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5})
    for index, record in enumerate(records):
        key, value, ts = record[:3]
        kwargs = {"partition": record[3]} if len(record) > 3 else {}
        p.produce(
            settings.topic,
            value=value,
            key=key,
            timestamp=ts,
            on_delivery=lambda err, msg, i=index: delivered(err, msg, i),
            **kwargs,
        )
        p.poll(0)
    assert p.flush(30) == 0
    assert None not in positions and len(set(positions)) == len(records)
    return positions


def ingest(settings, **overrides):
    opts = dict(
        lake_root=settings.lake_root,
        bootstrap=settings.bootstrap,
        topic=settings.topic,
        dlq_topic=settings.dlq_topic,
        until_idle=0.5,
        progress=False,
    )
    opts.update(overrides)
    return run_ingest(IngestOptions(**opts))


def table_dir(settings, table: str) -> str:
    return f"{settings.lake_root}/bronze/{TABLE_DIRS[table]}"


def read(settings, table: str):
    """One table (``bronze`` or ``rejects``) as Arrow, with its hive columns."""
    dataset = ds.dataset(table_dir(settings, table), format="parquet", partitioning="hive", ignore_prefixes=[".", "_"])
    return dataset.to_table()


def rows_by_offset(settings, table: str) -> dict:
    """``{(partition, offset): row dict + "file"}`` of every Parquet file of a table."""
    out = {}
    for path in files(settings, TABLE_DIRS[table]):
        for row in pq.read_table(path).to_pylist():
            row["file"] = path
            key = (row["kafka_partition"], row["kafka_offset"])
            assert key not in out, f"offset {key} twice in {table}"
            out[key] = row
    return out


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
    return sorted(glob.glob(f"{settings.lake_root}/bronze/{table}/**/*.parquet", recursive=True))


def all_files(settings) -> list:
    return files(settings, "telemetry") + files(settings, "_rejects")


def parquet_rows(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def hour_of_path(path: str) -> int:
    return partition_hour_ms(path)


def groups(settings) -> dict:
    """``{partition: [(first, last, count, [paths])...]}`` sorted by offset, from the file names."""
    by_group = defaultdict(list)
    for path in all_files(settings):
        name = BronzeFileName.parse(os.path.basename(path))
        assert name is not None, f"unexpected file name {path}"
        by_group[(name.partition, name.first_offset, name.last_offset, name.count)].append((name.index, path))
    out = defaultdict(list)
    for (p, first, last, count), members in sorted(by_group.items()):
        out[p].append((first, last, count, [path for _, path in sorted(members)]))
    return dict(out)


def assert_groups_whole_and_contiguous(settings, end_offsets: dict) -> None:
    """Every group has all its files (1..n), the groups of a partition tile
    ``0..end`` without gap or overlap, and each group's rows are exactly its range."""
    found = groups(settings)
    assert set(found) == {p for p, end in end_offsets.items() if end >= 0}
    for p, members in found.items():
        expected_next = 0
        for first, last, count, paths in members:
            names = [BronzeFileName.parse(os.path.basename(x)) for x in paths]
            assert sorted(n.index for n in names) == list(range(1, count + 1)), paths
            assert first == expected_next, f"partition {p}: gap or overlap at {first} (expected {expected_next})"
            offsets = []
            for path in paths:
                offsets += pq.read_table(path, columns=["kafka_offset"])["kafka_offset"].to_pylist()
            assert sorted(offsets) == list(range(first, last + 1)), f"group {first}..{last} rows != its range"
            expected_next = last + 1
        assert expected_next == end_offsets[p] + 1, f"partition {p} ends at {expected_next - 1}"


def tree(root: str) -> dict:
    """Every file under ``root`` (markers and hidden files too): size, mtime, content hash."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            st = os.stat(path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def markers(settings) -> dict:
    """``{hour_ms: marker json}`` of every ``_COMPLETE``."""
    out = {}
    for path in glob.glob(f"{settings.lake_root}/bronze/telemetry/**/_COMPLETE", recursive=True):
        with open(path) as f:
            out[hour_of_path(path)] = json.load(f)
    return out


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0, partitions: int = 4) -> list:
    """Every record of ``topic`` from the start (assigned partitions: no group join)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            got += [m for m in consumer.consume(1000, 0.3) if m.error() is None]
            if len(got) >= expected:  # then a little longer, to see any extra record
                got += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
                break
    finally:
        consumer.close()
    return got
