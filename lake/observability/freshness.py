"""Freshness: how far behind the newest Kafka record each layer is.

Read from the lake itself (and the broker, and the hot store when given),
so it holds whichever process wrote the layer and wherever it ran:

- Bronze: the oldest hour still open (data, no ``_COMPLETE``), the end of
  the newest complete hour, and the last commit (newest file's time);
- Silver: the last hour published (the run records the jobs leave under
  ``_quality/runs``, else the Delta table's newest ``event_ts``) and its last commit;
- Gold: the last day published, the same way;
- hot path: the newest ``last_event_ts`` and ``last_seen_at`` of ``live_vehicle_state``.

``behind_s`` is the newest Kafka record's timestamp minus what the layer has
published up to (the end of its last complete hour or day; the hot path's
newest event): a layer that keeps up stays within its own cadence.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import pyarrow.fs as pafs

from lake_core.bronze.layout import list_hours
from lake_core.kafka_admin import quiet_logger
from lake_core.storage import filesystem, fs_path
from lake_schemas import HOUR_MS, LakePaths
from lake_schemas.paths import COMPLETE_MARKER, join

__all__ = ["LayerFreshness", "lake_freshness", "newest_kafka_record_ms", "recent_silver_hours", "DAY_MS"]

DAY_MS = 86_400_000


@dataclass
class LayerFreshness:
    layer: str  # bronze | silver | gold | hot
    published_until_ms: Optional[int]  # the layer holds every record before this (Kafka/event time)
    last_commit_s: Optional[float]  # wall clock of the layer's last write
    oldest_open_ms: Optional[int] = None  # Bronze: the start of the oldest open hour
    open_hours: int = 0  # Bronze: hours with data and no _COMPLETE
    behind_s: Optional[float] = None  # newest Kafka record minus published_until
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bronze(lake_root: str) -> LayerFreshness:
    hours = [h for h in list_hours(lake_root) if h.table == "bronze_telemetry"]
    complete = [h for h in hours if any(f.base_name == COMPLETE_MARKER for f in h.files)]
    open_ = [h for h in hours if h not in complete and h.data_files()]
    mtimes = [f.mtime.timestamp() for h in hours for f in h.data_files() if f.mtime is not None]
    newest_complete = max((h.hour_ms for h in complete), default=None)
    return LayerFreshness(
        layer="bronze",
        published_until_ms=None if newest_complete is None else newest_complete + HOUR_MS,
        last_commit_s=max(mtimes, default=None),
        oldest_open_ms=min((h.hour_ms for h in open_), default=None),
        open_hours=len(open_),
        detail=f"{len(complete)} complete hours, {len(open_)} open",
    )


def _newest_record(fs: pafs.FileSystem, directory: str) -> Optional[tuple[str, float]]:
    """(name, mtime) of the newest run record under ``directory`` (names sort by time)."""
    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    files = [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".json")]
    if not files:
        return None
    newest = max(files, key=lambda i: i.base_name)
    return newest.base_name[: -len(".json")], newest.mtime.timestamp() if newest.mtime else 0.0


def _delta_commit_s(location: str) -> Optional[float]:
    from deltalake import DeltaTable  # noqa: PLC0415 - heavy; `lake --help` stays light
    from deltalake.exceptions import TableNotFoundError  # noqa: PLC0415

    try:
        history = DeltaTable(location).history(1)
    except (TableNotFoundError, OSError):
        return None
    return history[0]["timestamp"] / 1000 if history else None


def _published(lake_root: str, layer: str) -> LayerFreshness:
    fs, _ = filesystem(lake_root)
    paths = LakePaths(lake_root)
    record = _newest_record(fs, fs_path(lake_root, join(paths.quality, "runs", layer)))
    table = "silver_telemetry" if layer == "silver" else "gold_vehicle_hourly"
    commit = _delta_commit_s(paths.table(table))
    if record is None:
        return LayerFreshness(layer, None, commit, detail="nothing published yet")
    key, _ = record
    if layer == "silver":  # 2026-03-01T08: the hour ends an hour later
        start = dt.datetime.strptime(key, "%Y-%m-%dT%H").replace(tzinfo=dt.timezone.utc)
        until = int(start.timestamp() * 1000) + HOUR_MS
    else:  # 2026-03-01
        start = dt.datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
        until = int(start.timestamp() * 1000) + DAY_MS
    return LayerFreshness(layer, until, commit, detail=f"last published {key}")


def recent_silver_hours(lake_root: str, limit: int = 48) -> list[dict]:
    """The newest ``limit`` Silver hours the DAG recorded: ``hour_ms``, ``rows_in``, ``rows_out``, ``quarantined``."""
    fs, _ = filesystem(lake_root)
    directory = fs_path(lake_root, join(LakePaths(lake_root).quality, "runs", "silver"))
    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    names = sorted(
        (i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".json")), key=lambda i: i.base_name
    )[-limit:]
    hours = []
    for info in names:
        try:
            with fs.open_input_stream(info.path) as f:
                published = json.loads(f.read()).get("published", {})
            start = dt.datetime.strptime(info.base_name[: -len(".json")], "%Y-%m-%dT%H").replace(tzinfo=dt.timezone.utc)
        except (OSError, ValueError, AttributeError):
            continue  # a record being rewritten, or not one of ours
        hours.append(
            {
                "hour_ms": int(start.timestamp() * 1000),
                "rows_in": int(published.get("rows_in") or 0),
                "rows_out": int(published.get("rows_out") or 0),
                "quarantined": int(published.get("quarantined") or 0),
            }
        )
    return hours


def lake_freshness(
    lake_root: str, newest_kafka_ms: Optional[int] = None, hot: Optional[dict] = None
) -> list[LayerFreshness]:
    """Bronze, Silver, Gold (and the hot path when ``hot``: ``HotStore.stats()``), newest Kafka record given."""
    layers = [_bronze(lake_root), _published(lake_root, "silver"), _published(lake_root, "gold")]
    if hot is not None:
        last_seen = hot.get("last_seen_at_ms")
        layers.append(
            LayerFreshness(
                "hot",
                hot.get("last_event_ts_ms"),
                None if last_seen is None else last_seen / 1000,
                detail=f"{hot.get('vehicles', {}).get('total', 0)} vehicles",
            )
        )
    for layer in layers:
        if newest_kafka_ms is not None and layer.published_until_ms is not None:
            layer.behind_s = max(0.0, (newest_kafka_ms - layer.published_until_ms) / 1000)
    return layers


def newest_kafka_record_ms(bootstrap: str, topic: str, timeout: float = 5.0) -> Optional[int]:
    """The timestamp of the newest record of ``topic`` (the last of each partition), or None when empty."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition  # noqa: PLC0415 - librdkafka only where needed

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "lake-status",  # never committed: partitions are assigned
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "socket.timeout.ms": int(timeout * 1000),
        },
        logger=quiet_logger(),
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
        wanted = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
            if high > low:
                wanted.append(TopicPartition(topic, p, high - 1))
        if not wanted:
            return None
        # Read each partition from its last offset to its end: one record on Kafka; the embedded broker
        # (Tansu) reports the end of a partition as its last record *batch*, so there the batch is read.
        consumer.assign(wanted)
        newest, left = None, {tp.partition for tp in wanted}
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    left.discard(message.partition())
                continue
            stamp = message.timestamp()[1]
            newest = stamp if newest is None else max(newest, stamp)
        return newest
    finally:
        consumer.close()
