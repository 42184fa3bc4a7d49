"""Before reading, check that the topic still holds what Bronze says it read.

Bronze's file names say where each Kafka partition resumes (offset ``R``).
The broker may disagree:

- its log now ends before ``R``, or the record at ``R - 1`` is not the one
  Bronze holds: the topic was recreated, or the broker lost its log (the
  embedded broker keeps topics in memory). Reading on would skip the new
  records below ``R`` without a word, so the ingest stops with exit 3 naming
  each partition and both offsets, until ``lake ingest --new-generation``;
- its log now starts after ``R`` (retention deleted records before they were
  read): a gap, recorded where the ledger reads it, named on stderr, skipped.

Checked when a run starts, once per partition: a few fetches, never per record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipelines.ingest.bronze_state import BronzeState, BronzeStore
from lake_core.errors import LakeError

__all__ = ["OffsetsWentBackwards", "PartitionCheck", "check_positions"]

LOG = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 5.0


class OffsetsWentBackwards(LakeError):
    exit_code = 3


@dataclass(frozen=True)
class PartitionCheck:
    partition: int
    resume: int  # where Bronze resumes
    earliest: int  # the broker's log start
    end: Optional[int]  # the broker's log end, when it was needed
    verdict: str  # "ok" | "gap" | "backwards"
    detail: str = ""


def check_positions(bootstrap: str, topic: str, store: BronzeStore, state: BronzeState) -> list[PartitionCheck]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "lake-ingest-check",  # never joined: partitions are assigned
            "enable.auto.commit": False,
            "auto.offset.reset": "error",  # out of range must say so, not jump
            "enable.partition.eof": True,
        }
    )
    try:
        checks: dict[int, PartitionCheck] = {}
        probe: dict[int, int] = {}
        for p, resume in sorted(state.next_offsets.items()):
            earliest, end = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if earliest > resume:
                checks[p] = PartitionCheck(p, resume, earliest, end, "gap", f"offsets {resume}..{earliest - 1}")
            elif resume > 0 and earliest <= resume - 1 and p in state.last_files:
                probe[p] = resume - 1
            else:
                checks[p] = PartitionCheck(p, resume, earliest, end, "ok")
        if probe:
            checks.update(_probe(consumer, topic, store, state, probe))
        return [checks[p] for p in sorted(checks)]
    finally:
        consumer.close()


def _probe(consumer: Any, topic: str, store: BronzeStore, state: BronzeState, probe: dict[int, int]) -> dict:
    """Fetch the record at ``R - 1`` of each partition and compare it with the one Bronze holds."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer.assign([TopicPartition(topic, p, offset) for p, offset in probe.items()])
    seen: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while len(seen) < len(probe) and time.monotonic() < deadline:
        for m in consumer.consume(len(probe), 0.2):
            p = m.partition()
            if p not in probe or p in seen:
                continue
            error = m.error()
            if error is None:
                seen[p] = ("record", m)
            elif error.code() == KafkaError._PARTITION_EOF:
                seen[p] = ("end", m.offset())
            elif error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                seen[p] = ("out_of_range", error.str())
    out = {}
    for p, offset in probe.items():
        resume = offset + 1
        earliest, end = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        kind, what = seen.get(p, ("silent", None))
        if kind == "record" and what.offset() == offset:
            if _payload(what.value()) == _bronze_payload(store, state, p, offset):
                out[p] = PartitionCheck(p, resume, earliest, end, "ok")
            else:
                out[p] = PartitionCheck(
                    p, resume, earliest, end, "backwards", f"the record at offset {offset} is not the one Bronze holds"
                )
        elif kind == "silent" and end >= resume:
            LOG.warning("partition %d: the broker did not answer a fetch at offset %d; not checked", p, offset)
            out[p] = PartitionCheck(p, resume, earliest, end, "ok", "not checked")
        else:
            log_end = what if kind == "end" else end
            out[p] = PartitionCheck(p, resume, earliest, log_end, "backwards", f"the log ends at offset {log_end}")
    return out


def _payload(value: Optional[bytes]) -> str:
    """As the ingest stores it (``batches._text``): UTF-8, or backslash escapes; a tombstone as ""."""
    if value is None:
        return ""
    return value.decode("utf-8", "backslashreplace")


def _bronze_payload(store: BronzeStore, state: BronzeState, partition: int, offset: int) -> Optional[str]:
    for path in state.last_files.get(partition, []):
        with store.fs.open_input_file(path) as f:
            rows = pq.read_table(f, columns=["kafka_offset", "payload"])
        hit = rows.filter(pc.equal(rows["kafka_offset"], offset))
        if hit.num_rows:
            return str(hit["payload"][0].as_py())
    return None


def backwards_message(checks: list[PartitionCheck], topic: str) -> str:
    parts = "; ".join(f"partition {c.partition}: Bronze resumes at offset {c.resume}, {c.detail}" for c in checks)
    return (
        f"the offsets of {topic} went backwards ({parts}): the topic was recreated or the broker lost its log. "
        "Nothing was read. Run `lake ingest --new-generation` to ingest the topic as it is now, in a new "
        "generation of Bronze files (the old ones stay)"
    )
