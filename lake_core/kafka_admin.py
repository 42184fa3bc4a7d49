"""The Kafka admin calls the lake makes: is a broker there, which topics, how many partitions.

Every call works against any Kafka-protocol broker (Kafka, Redpanda, the
embedded Tansu); failures are ``BrokerUnavailableError`` with one line that
names the address.
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any, Iterable, Optional

from lake_core.errors import BrokerUnavailableError
from lake_schemas import DEFAULT_PARTITIONS

__all__ = ["wait_until_reachable", "ensure_topics", "partition_count", "quiet_logger"]


def wait_until_reachable(bootstrap: str, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    """Return once a Kafka client gets metadata from ``bootstrap``; else raise."""

    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap, log_level=0)
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerUnavailableError(f"broker process exited with code {proc.returncode}")
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return
        except Exception as exc:  # noqa: BLE001 - librdkafka raises KafkaException with many codes
            last = str(exc)
        time.sleep(0.1)
    raise BrokerUnavailableError(f"no Kafka broker answers at {bootstrap} ({last})")


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS) -> None:
    """Create the missing ``topics``; wait until metadata shows them."""
    from confluent_kafka.admin import NewTopic

    topics = list(topics)
    if not topics:
        return
    admin = _admin(bootstrap)
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [t for t in topics if t not in existing]
    if missing:
        futures = admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
        for topic, fut in futures.items():
            try:
                fut.result(timeout=10)
            except Exception as exc:  # noqa: BLE001
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerUnavailableError(f"cannot create topic {topic} on {bootstrap}: {exc}") from None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5).topics
        if all(t in md and md[t].partitions for t in topics):
            return
        time.sleep(0.1)
    raise BrokerUnavailableError(f"topics {topics} did not appear on {bootstrap}")


def partition_count(bootstrap: str, topic: str, timeout: float = 10.0) -> int:
    """Partitions of ``topic``; a clear error when the broker or topic is missing."""

    admin = _admin(bootstrap)
    try:
        # All topics, not list_topics(topic=...): a metadata request naming a topic makes brokers
        # that auto-create topics (Tansu, Kafka's default) create a mistyped one.
        md = admin.list_topics(timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        raise BrokerUnavailableError(f"no Kafka broker answers at {bootstrap} ({exc})") from None
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise BrokerUnavailableError(f"topic {topic!r} does not exist on {bootstrap} (run `lake broker start`?)")
    return len(meta.partitions)


def _admin(bootstrap: str, **config: Any) -> Any:
    """An ``AdminClient`` that logs through ``quiet_logger`` (librdkafka takes a logger object; its stubs say not)."""
    from confluent_kafka.admin import AdminClient

    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet_logger(), **config}
    return AdminClient(settings)


def quiet_logger() -> logging.Logger:
    """librdkafka logs connection refusals at ERROR; the caller reports them once."""
    logger = logging.getLogger("lake.kafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger
