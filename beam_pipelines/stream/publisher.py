"""``AlertPublisher``: the alert outbox -> the ``vehicle-alerts`` topic (and the webhook), exactly once.

The stream commits alert events into ``hot.stream_alert_outbox`` in the same
transaction as the rows and offsets behind them; this thread sends them to
the alerts topic in outbox order (one partition: alerts are few, and one
partition keeps them in order), each record carrying the header
``lake.alert-event = "{alert_id}:{seq}"``, and marks them published.

A kill between the broker's acknowledgement and the mark would send them
twice on restart; so on start the publisher first reads the alerts topic
from the offset its last mark recorded (``hot.stream_publisher``) to its end
and marks what it finds there. A webhook, when configured, is POSTed from a
second thread with retries and backoff (at least once: a kill between the
POST and its mark repeats it); a failing webhook never holds the topic back.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Optional

from lake_core import hot_store as hs
from lake_core.kafka_admin import ensure_topics
from lake_schemas.hot import alert_message

LOG = logging.getLogger(__name__)
S = hs.HOT_SCHEMA
HEADER = "lake.alert-event"
ALERTS_PARTITION = 0


class AlertPublisher:
    def __init__(
        self, dsn: str, bootstrap: str, alerts_topic: str, webhook: Optional[str] = None, interval: float = 0.1
    ):
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.topic = alerts_topic
        self.webhook = webhook
        self.interval = interval
        self.published = 0
        self.webhook_posted = 0
        self.webhook_failures = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._box: list = [None]
        self._webhook_box: list = [None]
        self._producer: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "AlertPublisher":
        from confluent_kafka import Producer  # noqa: PLC0415 - librdkafka only where alerts are sent

        ensure_topics(self.bootstrap, [self.topic], partitions=1)
        self._producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5, "acks": "all"}
        )
        self._recover()
        self._threads = [threading.Thread(target=self._loop, name="alert-publisher", daemon=True)]
        if self.webhook:
            self._threads.append(threading.Thread(target=self._webhook_loop, name="alert-webhook", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the threads; with ``drain``, first publish what the outbox holds."""
        if drain:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.pending() > 0:
                time.sleep(self.interval)
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        if self._producer is not None:
            self._producer.flush(10)
        for box in (self._box, self._webhook_box):
            if box[0] is not None:
                box[0].close()
                box[0] = None

    def pending(self) -> int:
        conn = hs.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {S}.stream_alert_outbox WHERE published_at IS NULL")
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def _wait(self, message: str, delay: float) -> None:
        print(f"lake stream: alert publisher: {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        """Mark as published what the topic holds past the last recorded mark (a kill after delivery)."""
        from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415 - librdkafka only here

        def checked(conn: Any) -> int:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT checked_to FROM {S}.stream_publisher WHERE alerts_topic = %s AND partition = %s",
                    (self.topic, ALERTS_PARTITION),
                )
                row = cur.fetchone()
            return int(row[0]) if row else 0

        start = hs.with_retries(self.dsn, checked, self._wait, conn_box=self._box)
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "lake-stream-alerts", "enable.auto.commit": False}
        )
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, ALERTS_PARTITION), timeout=10)
            begin = max(start, low)
            found: list[tuple[str, int]] = []
            if high > begin:
                consumer.assign([TopicPartition(self.topic, ALERTS_PARTITION, begin)])
                position = begin
                deadline = time.monotonic() + 30
                while position < high and time.monotonic() < deadline:
                    for m in consumer.consume(1000, 1.0):
                        if m.error() is not None:
                            continue
                        position = int(m.offset() or 0) + 1
                        headers: Any = m.headers() or []
                        for name, raw in headers:
                            if name == HEADER and isinstance(raw, bytes):
                                aid, seq = raw.decode().rsplit(":", 1)
                                found.append((aid, int(seq)))
        finally:
            consumer.close()

        def mark(conn: Any) -> None:
            with conn.cursor() as cur:
                for aid, seq in found:
                    cur.execute(
                        f"UPDATE {S}.stream_alert_outbox SET published_at = now() "
                        "WHERE alert_id = %s AND seq = %s AND published_at IS NULL",
                        (aid, seq),
                    )
                self._record_checked(cur, high)

        hs.with_retries(self.dsn, mark, self._wait, conn_box=self._box)
        if found:
            LOG.info("alert publisher: %d event(s) were in the topic already", len(found))

    def _record_checked(self, cur: Any, offset: int) -> None:
        cur.execute(
            f"INSERT INTO {S}.stream_publisher (alerts_topic, partition, checked_to) VALUES (%s, %s, %s) "
            "ON CONFLICT (alerts_topic, partition) DO UPDATE "
            "SET checked_to = GREATEST(stream_publisher.checked_to, EXCLUDED.checked_to)",
            (self.topic, ALERTS_PARTITION, offset),  # the mark only moves forward
        )

    # ------------------------------------------------------------------ the topic
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = hs.with_retries(self.dsn, self._publish_some, self._wait, conn_box=self._box)
            except Exception as exc:  # noqa: BLE001 - the publisher must outlive a broker hiccup; it retries
                print(f"lake stream: alert publisher: {exc}; retrying", file=sys.stderr, flush=True)
                sent = 0
                self._stop.wait(1.0)
            if not sent:
                self._stop.wait(self.interval)

    def _publish_some(self, conn: Any) -> int:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT id, alert_id, seq, vehicle_id, rule, state, (extract(epoch FROM at) * 1000)::bigint, details "
                f"FROM {S}.stream_alert_outbox WHERE published_at IS NULL ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED"
            )
            rows = cur.fetchall()
            if not rows:
                return 0
            errors: list = []
            last_offset = [-1]

            def delivered(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(err)
                else:
                    last_offset[0] = max(last_offset[0], msg.offset())

            for _, aid, seq, vehicle, rule, state, at_ms, details in rows:
                self._producer.produce(
                    self.topic,
                    value=alert_message(str(aid), vehicle, rule, state, int(at_ms), details),
                    key=vehicle.encode(),
                    partition=ALERTS_PARTITION,
                    headers=[(HEADER, f"{aid}:{seq}".encode())],
                    on_delivery=delivered,
                )
            remaining = self._producer.flush(30)
            if errors or remaining:
                raise RuntimeError(f"the alerts topic did not take {len(errors) + remaining} event(s): {errors[:1]}")
            cur.execute(
                f"UPDATE {S}.stream_alert_outbox SET published_at = now() WHERE id = ANY(%s)", ([r[0] for r in rows],)
            )
            self._record_checked(cur, last_offset[0] + 1)
        self.published += len(rows)
        return len(rows)

    # ------------------------------------------------------------------ the webhook
    def _webhook_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                done = hs.with_retries(self.dsn, self._post_some, self._wait, conn_box=self._webhook_box)
                delay = 0.5
            except _WebhookDown as exc:
                self.webhook_failures += 1
                print(f"lake stream: alert webhook: {exc}; retrying in {delay:.1f} s", file=sys.stderr, flush=True)
                self._stop.wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            if not done:
                self._stop.wait(self.interval * 5)

    def _post_some(self, conn: Any) -> int:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT id, alert_id, vehicle_id, rule, state, (extract(epoch FROM at) * 1000)::bigint, details "
                f"FROM {S}.stream_alert_outbox WHERE webhook_at IS NULL AND published_at IS NOT NULL "
                "ORDER BY id LIMIT 100"
            )
            rows = cur.fetchall()
            for row_id, aid, vehicle, rule, state, at_ms, details in rows:
                body = alert_message(str(aid), vehicle, rule, state, int(at_ms), details)
                assert self.webhook is not None
                request = urllib.request.Request(
                    self.webhook, data=body, headers={"Content-Type": "application/json"}, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the operator's URL
                        response.read()
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    conn.commit()  # keep what was posted
                    raise _WebhookDown(f"POST {self.webhook} failed: {exc}") from None
                cur.execute(f"UPDATE {S}.stream_alert_outbox SET webhook_at = now() WHERE id = %s", (row_id,))
                self.webhook_posted += 1
        return len(rows)


class _WebhookDown(Exception):
    pass
