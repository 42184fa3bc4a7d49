"""``python -m benchmarks.ingest --events 1000000``

Pre-produces snapshot messages into the embedded broker, then times on the
same topic (a) a plain loop: confluent-kafka consumer with assigned
partitions -> parse -> pyarrow -> Parquet, and (b) ``lake ingest
--until-idle 1`` (its idle bound subtracted). The last line is
``ingest: <N> events/s, baseline <M> events/s, ratio <R>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import dir_bytes, kafka, produce_snapshots
from lake_schemas import BRONZE_SCHEMA

IDLE_SECONDS = 1.0


def baseline(bootstrap: str, topic: str, partitions: int, expected: int, out_dir: str) -> float:
    """The plain loop a data engineer would write first; returns seconds."""
    from confluent_kafka import Consumer, TopicPartition

    started = time.perf_counter()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-baseline",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    columns = {p: ([], [], [], [], [], [], []) for p in range(partitions)}
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    one_ms = dt.timedelta(milliseconds=1)
    seen = 0
    while seen < expected:
        for m in consumer.consume(5000, 1.0):
            if m.error():
                continue
            value = m.value()
            doc = msgspec.json.decode(value)
            offsets, stamps, keys, payloads, vids, ets, _ = columns[m.partition()]
            offsets.append(m.offset())
            stamps.append(m.timestamp()[1])
            keys.append(m.key())
            payloads.append(value)
            vids.append(doc.get("vehicle_id"))
            ets.append((dt.datetime.fromisoformat(doc["ts"]) - epoch) // one_ms)
            seen += 1
    consumer.close()
    for p, (offsets, stamps, keys, payloads, vids, ets, _) in columns.items():
        n = len(offsets)
        table = pa.Table.from_arrays(
            [
                pa.array([topic] * n, pa.string()),
                pa.array([p] * n, pa.int32()),
                pa.array(offsets, pa.int64()),
                pa.array(stamps, pa.int64()).cast(BRONZE_SCHEMA.field("ingest_ts").type),
                pa.array(keys, pa.binary()).cast(pa.string()),
                pa.array(payloads, pa.binary()).cast(pa.string()),
                pa.array(vids, pa.string()),
                pa.array(ets, pa.int64()).cast(BRONZE_SCHEMA.field("event_ts").type),
            ],
            schema=BRONZE_SCHEMA,
        )
        pq.write_table(table, os.path.join(out_dir, f"p{p}.parquet"), compression="zstd")
    return time.perf_counter() - started


def lake_ingest(bootstrap: str, topic: str, lake_root: str) -> float:
    """``lake ingest --until-idle 1`` as a user runs it; returns seconds minus the idle bound."""
    lake = os.path.join(os.path.dirname(sys.executable), "lake")
    cmd = [
        lake,
        "ingest",
        "--lake-root",
        lake_root,
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--until-idle",
        str(IDLE_SECONDS),
    ]
    started = time.perf_counter()
    if os.environ.get("LAKE_BENCH_PROFILE"):
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "py-spy"),
            "record",
            "-o",
            os.environ["LAKE_BENCH_PROFILE"],
            "-f",
            "raw",
            "--",
            *cmd,
        ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"lake ingest failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    for line in done.stderr.splitlines():
        if line.startswith("pass "):
            print(line, flush=True)
    print(done.stdout.strip().splitlines()[-1], flush=True)
    return elapsed - IDLE_SECONDS


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--bootstrap", help="use this Kafka instead of a fresh embedded broker")
    args = ap.parse_args(argv)
    with kafka(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory(prefix="lake-bench-") as work:
        topic, events, raw_bytes = produce_snapshots(bootstrap, args.events, args.partitions)
        base_dir = os.path.join(work, "baseline")
        os.makedirs(base_dir)
        base_s = baseline(bootstrap, topic, args.partitions, events, base_dir)
        print(f"baseline: {events:,} events in {base_s:.2f}s", flush=True)
        lake_root = os.path.join(work, "lake")
        ingest_s = lake_ingest(bootstrap, topic, lake_root)
        print(f"lake ingest: {events:,} events in {ingest_s:.2f}s (idle bound of {IDLE_SECONDS:g}s subtracted)")
        bronze = dir_bytes(os.path.join(lake_root, "bronze"))
        print(
            f"bronze: {bronze / events:.1f} bytes/event vs {raw_bytes / events:.1f} raw JSON bytes/event "
            f"({bronze / raw_bytes:.1%} of raw); baseline Parquet {dir_bytes(base_dir) / raw_bytes:.1%} of raw"
        )
        rate, base_rate = events / ingest_s, events / base_s
        print(f"ingest: {rate:,.0f} events/s, baseline {base_rate:,.0f} events/s, ratio {rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
