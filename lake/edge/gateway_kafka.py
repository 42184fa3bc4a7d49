"""The gateway's way into Kafka: one producer per worker, delivery reports resolved as asyncio futures.

``forward`` produces a request's messages (keyed by the vehicle id, the
arrival time as record timestamp, the bytes as sent) and returns once Kafka
acknowledged every one of them, or raises ``KafkaUnavailable`` within the
produce timeout. The producer is idempotent with ``acks=all``: librdkafka's
own retries neither duplicate nor reorder a vehicle's messages.

A background thread polls the producer: delivery reports arrive there, are
counted per request, and the request's future is resolved on the event loop
(``call_soon_threadsafe``) once its last report is in, so the loop pays one
wake-up per request, not one per message.

When every broker is down (librdkafka's ``_ALL_BROKERS_DOWN``), requests are
refused at once, without producing, until a metadata probe answers again:
a device gets its 503 in milliseconds, not after the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Mapping, Optional

from confluent_kafka import KafkaError, KafkaException, Producer

from lake_core.kafka_admin import quiet_logger

__all__ = ["KafkaForwarder", "KafkaUnavailable"]

LOG = logging.getLogger("lake.gateway")


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge a request's messages (down, too slow, or refused them)."""


class _Acks:
    """Counts one request's delivery reports (in the polling thread) and resolves its future once."""

    __slots__ = ("remaining", "error", "future", "loop", "started")

    def __init__(self, count: int, future: asyncio.Future, loop: asyncio.AbstractEventLoop):
        self.remaining = count
        self.error: Optional[str] = None
        self.future = future
        self.loop = loop
        self.started = time.perf_counter()

    def delivered(self, err: Optional[KafkaError], _msg: Any) -> None:
        if err is not None and self.error is None:
            self.error = err.str()
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(_resolve, self.future, self.error)


def _resolve(future: asyncio.Future, error: Optional[str]) -> None:
    if not future.done():  # the request may have timed out and gone
        future.set_result(error)


class KafkaForwarder:
    #: Producer settings; ``config`` passed to the constructor overrides them.
    DEFAULTS: Mapping[str, object] = {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,  # a few ms of batching: a request waits for its own acks
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "partitioner": "murmur2_random",  # the Java client's choice: same key, same partition (as the senders)
        "socket.connection.setup.timeout.ms": 3000,
    }
    #: Messages waiting in the producer past which a request is refused (503) rather than queued.
    MAX_QUEUED = 400_000

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        produce_timeout_s: float = 5.0,
        config: Optional[Mapping[str, object]] = None,
        on_produced: Optional[Callable[[float], None]] = None,
    ):
        self.bootstrap = bootstrap
        self.topic = topic
        self.produce_timeout_s = produce_timeout_s
        self._on_produced = on_produced  # seconds from produce to the last acknowledgement, per request
        self._producer = Producer(
            {
                **self.DEFAULTS,
                **(config or {}),
                "bootstrap.servers": bootstrap,
                "message.timeout.ms": int(produce_timeout_s * 1000),
                "error_cb": self._on_error,
                "logger": quiet_logger(),
            }
        )
        self._down_since: Optional[float] = None  # set by librdkafka's "all brokers down", cleared by a probe
        self._last_error = ""
        self._health: tuple[float, Optional[str]] = (0.0, "not checked yet")
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="gateway-kafka-poll", daemon=True)
        self._prober = threading.Thread(target=self._probe_loop, name="gateway-kafka-probe", daemon=True)

    # -- life cycle

    def start(self) -> None:
        self._poller.start()
        self._prober.start()

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued (up to ``timeout_s``), stop the threads; returns messages left undelivered."""
        left = self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=2)
        self._prober.join(timeout=2)
        return left

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _on_error(self, err: KafkaError) -> None:
        self._last_error = err.str()
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._down_since is None:
                LOG.warning("Kafka at %s is unreachable: refusing requests until it answers", self.bootstrap)
            self._down_since = time.monotonic()

    # -- health

    def _probe_loop(self) -> None:
        """Once a second: can we get the topic's metadata? Cheap (one small request), off the event loop."""
        while not self._stop.wait(1.0):
            self._health = (time.monotonic(), self._probe())
            if self._health[1] is None and self._down_since is not None:
                LOG.warning("Kafka at %s answers again", self.bootstrap)
                self._down_since = None

    def _probe(self) -> Optional[str]:
        try:
            # All topics, not list_topics(topic=...): naming one makes auto-creating brokers create it.
            metadata = self._producer.list_topics(timeout=1.0)
        except KafkaException as exc:
            return f"no Kafka broker answers at {self.bootstrap} ({exc.args[0].str()})"
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return f"topic {self.topic!r} does not exist on {self.bootstrap}"
        return None

    def health(self) -> Optional[str]:
        """None when Kafka answered the last probe (at most ~1 s old) for our topic; else why not."""
        checked_at, problem = self._health
        if time.monotonic() - checked_at > 3.0:
            self._health = (time.monotonic(), self._probe())
            checked_at, problem = self._health
        if problem is None and self._down_since is not None:
            return f"Kafka at {self.bootstrap} is unreachable ({self._last_error})"
        return problem

    # -- the work

    async def forward(self, key: bytes, values: list[bytes], timestamp_ms: int) -> None:
        """Produce ``values`` and return once Kafka acknowledged all of them; else ``KafkaUnavailable``."""
        if self._down_since is not None:
            raise KafkaUnavailable(f"Kafka at {self.bootstrap} is unreachable ({self._last_error})")
        if len(self._producer) + len(values) > self.MAX_QUEUED:
            raise KafkaUnavailable(f"Kafka at {self.bootstrap} is not keeping up ({len(self._producer):,} queued)")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        acks = _Acks(len(values), future, loop)
        produce, topic, delivered = self._producer.produce, self.topic, acks.delivered
        try:
            for value in values:
                produce(topic, value, key, timestamp=timestamp_ms, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            # Some of the batch may be queued already: they will be delivered, and the device, told 503,
            # sends the batch again (Silver removes the duplicates by event id). Nobody awaits the future now.
            raise KafkaUnavailable(f"cannot produce to {self.topic}: {exc}") from None
        try:
            error = await asyncio.wait_for(future, self.produce_timeout_s + 1.0)
        except asyncio.TimeoutError:
            waited = f"{self.produce_timeout_s:g} s"
            raise KafkaUnavailable(f"Kafka at {self.bootstrap} did not acknowledge within {waited}") from None
        if error is not None:
            raise KafkaUnavailable(f"Kafka refused or did not acknowledge the messages ({error})")
        if self._on_produced is not None:
            self._on_produced(time.perf_counter() - acks.started)
