"""``HotCommitter``: one partition's outputs, offsets and (now and then) state, in one PostgreSQL transaction.

A commit upserts the rows a batch changed (``lake_core.hot_store``), adds its
alert events to the outbox (``stream_alert_outbox``; the publisher sends them
to ``vehicle-alerts``), moves the partition's offset, and adds its counters.
The offset moves only from the value this committer last saw: a second
stream writing the same partition fails its commit (``StreamFenced``) instead
of doubling anything.

The partition's state (``PartitionState``, pickled) is saved with its offset
at the end of each local pass and every ``snapshot_seconds``; a restart loads
it and re-reads from its offset, applying the records up to the committed
offset again without writing them (their rows and events are in the store).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import pickle
import sys
import threading
import time
from typing import Any, Callable, Optional

from beam_pipelines.stream.engine import Drained, PartitionState
from lake_core import hot_store as hs
from lake_core.errors import LakeError
from lake_schemas.hot import DEFAULT_RULES, HotRules

LOG = logging.getLogger(__name__)
S = hs.HOT_SCHEMA


class StreamFenced(LakeError):
    """Another ``lake stream`` moved this partition's offset: this one stops."""

    exit_code = 3


#: Waits for PostgreSQL, per process: how often and how long (reported in the pass's metrics).
PG_WAITS: dict[str, float] = {"count": 0, "seconds": 0.0}
_WAITS_LOCK = threading.Lock()


def _report_wait(message: str, delay: float) -> None:
    with _WAITS_LOCK:
        PG_WAITS["count"] += 1
        PG_WAITS["seconds"] += delay
    print(f"lake stream: {message}", file=sys.stderr, flush=True)


class HotCommitter:
    """The hot store as one partition's stream sees it. ``dsn`` is read from settings, never logged whole."""

    def __init__(self, dsn: str, topic: str, on_wait: Callable[[str, float], None] = _report_wait):
        self.dsn = dsn
        self.topic = topic
        self._box: list = [None]
        self._days: set = set()
        self._on_wait = on_wait

    def _run(self, work: Callable[[Any], Any]) -> Any:
        return hs.with_retries(self.dsn, work, self._on_wait, conn_box=self._box)

    def close(self) -> None:
        if self._box[0] is not None:
            try:
                self._box[0].close()
            finally:
                self._box[0] = None

    # ------------------------------------------------------------------ start
    def load(self, partition: int, rules: HotRules = DEFAULT_RULES) -> tuple[PartitionState, int]:
        """The partition's saved state (or a fresh one) and the offset its outputs are committed to."""

        def work(conn: Any) -> tuple[Optional[bytes], Optional[int], Optional[int]]:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT state, next_offset FROM {S}.stream_state WHERE topic = %s AND partition = %s",
                    (self.topic, partition),
                )
                saved = cur.fetchone()
                cur.execute(
                    f"SELECT next_offset FROM {S}.stream_offsets WHERE topic = %s AND partition = %s",
                    (self.topic, partition),
                )
                committed = cur.fetchone()
            return (
                bytes(saved[0]) if saved else None,
                saved[1] if saved else None,
                committed[0] if committed else None,
            )

        blob, saved_offset, committed = self._run(work)
        if blob is not None:
            state = pickle.loads(blob)
            state.rules = rules
            assert state.next_offset == saved_offset
        else:
            state = PartitionState(self.topic, partition, 0, rules)
        return state, committed if committed is not None else 0

    # ------------------------------------------------------------------ commit
    def commit(self, state: PartitionState, drained: Drained, committed: int, counts: dict, snapshot: bool) -> int:
        """Write ``drained``, move the offset from ``committed`` to ``state.next_offset``; the new committed offset."""
        new_offset = max(state.next_offset, committed)
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL) if snapshot else None

        def work(conn: Any) -> None:
            with conn.cursor() as cur:
                hs.ensure_day_partitions(cur, (hs.day_of_ms(d * 86_400_000) for d in drained.days), self._days)
                hs.upsert(cur, hs.LIVE_STATE, [_live_row(r) for r in drained.live])
                for size, rows in drained.windows.items():
                    hs.upsert(cur, hs.WINDOWS[size], [(r[0], hs.ts_text(r[1]), *r[2:]) for r in rows])
                hs.upsert(cur, hs.ZONE_PARTS, [(z, hs.ts_text(s), *rest) for z, s, *rest in drained.zones])
                hs.upsert(
                    cur,
                    hs.ALERTS,
                    [(a, v, r, sev, hs.ts_text(o), hs.ts_text(res), d) for a, v, r, sev, o, res, d in drained.alerts],
                )
                hs.upsert(
                    cur,
                    hs.OUTBOX,
                    [
                        (e.alert_id, e.seq, e.vehicle_id, e.rule, e.state, hs.ts_text(e.at), e.details, state.partition)
                        for e in drained.events
                    ],
                )
                cur.execute(
                    f"UPDATE {S}.stream_offsets SET next_offset = %s, updated_at = now() "
                    "WHERE topic = %s AND partition = %s AND next_offset = %s",
                    (new_offset, self.topic, state.partition, committed),
                )
                mine = False
                if cur.rowcount != 1:
                    cur.execute(
                        f"SELECT next_offset FROM {S}.stream_offsets WHERE topic = %s AND partition = %s",
                        (self.topic, state.partition),
                    )
                    row = cur.fetchone()
                    # Our own commit, whose acknowledgement the connection lost before we saw it: the rows
                    # written again are the same rows (upserts, outbox keyed by alert and sequence).
                    mine = row is not None and row[0] == new_offset
                    if row is None:
                        cur.execute(
                            f"INSERT INTO {S}.stream_offsets (topic, partition, next_offset) VALUES (%s, %s, %s)",
                            (self.topic, state.partition, new_offset),
                        )
                    elif not mine:
                        raise StreamFenced(
                            f"partition {state.partition} of {self.topic} was committed by another lake stream "
                            f"(expected offset {committed}); this one stops"
                        )
                if counts and not mine:  # counted once
                    cur.execute(
                        f"INSERT INTO {S}.stream_counters AS c (topic, partition, counts) VALUES (%s, %s, %s) "
                        "ON CONFLICT (topic, partition) DO UPDATE SET counts = ("
                        "SELECT jsonb_object_agg(k, coalesce((c.counts->>k)::bigint, 0) "
                        "+ coalesce((EXCLUDED.counts->>k)::bigint, 0)) "
                        "FROM (SELECT jsonb_object_keys(c.counts || EXCLUDED.counts) AS k) keys)",
                        (self.topic, state.partition, json.dumps(counts)),
                    )
                if blob is not None:
                    cur.execute(
                        f"INSERT INTO {S}.stream_state (topic, partition, next_offset, state) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
                        "state = EXCLUDED.state, saved_at = now()",
                        (self.topic, state.partition, state.next_offset, _binary(blob)),
                    )

        self._run(work)
        return new_offset

    def save_state(self, state: PartitionState) -> None:
        """Save ``state`` alone (its outputs are committed): the start of the next pass."""
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

        def work(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT next_offset FROM {S}.stream_offsets WHERE topic = %s AND partition = %s FOR UPDATE",
                    (self.topic, state.partition),
                )
                row = cur.fetchone()
                if row is not None and row[0] < state.next_offset:
                    return  # outputs not all committed (a failed pass): keep the older snapshot
                cur.execute(
                    f"INSERT INTO {S}.stream_state (topic, partition, next_offset, state) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
                    "state = EXCLUDED.state, saved_at = now()",
                    (self.topic, state.partition, state.next_offset, _binary(blob)),
                )

        self._run(work)

    def retain(self, hot_days: int, newest_event_ms: int) -> list[str]:
        """Drop the day partitions older than ``hot_days`` before the newest event's day."""
        first_kept = hs.day_of_ms(newest_event_ms) - dt.timedelta(days=hot_days - 1)

        def work(conn: Any) -> list[str]:
            with conn.cursor() as cur:
                return hs.drop_days_before(cur, first_kept, self._days)

        return self._run(work)


def _binary(blob: bytes) -> Any:
    import psycopg2  # noqa: PLC0415 - the driver, only where the hot path writes

    return psycopg2.Binary(blob)


def _live_row(row: tuple) -> tuple:
    # vehicle_id, 19 fields, last_event_id, last_event_ts, last_seen_at, online, inside, partition, offset
    out = list(row)
    out[21] = hs.ts_text(row[21])
    out[22] = hs.ts_text(row[22])
    return tuple(out)


def prepare_store(dsn: str, topic: str, partitions: int) -> None:
    """Create the database and schema when missing, apply migrations, register the partitions' offsets."""
    hs.ensure_database(dsn)
    conn = hs.connect(dsn)
    try:
        hs.migrate(conn)
        with conn.cursor() as cur:
            for p in range(partitions):
                cur.execute(
                    f"INSERT INTO {S}.stream_offsets (topic, partition, next_offset) VALUES (%s, %s, 0) "
                    "ON CONFLICT DO NOTHING",
                    (topic, p),
                )
        conn.commit()
    finally:
        conn.close()


def start_offsets(dsn: str, topic: str, partitions: int) -> dict[int, int]:
    """Where each partition's reader starts: its saved state's offset (0 without one)."""
    conn = hs.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT partition, next_offset FROM {S}.stream_state WHERE topic = %s", (topic,))
            saved = dict(cur.fetchall())
        conn.rollback()
    finally:
        conn.close()
    return {p: int(saved.get(p, 0)) for p in range(partitions)}


def hold_stream_lock(dsn: str, topic: str, wait_s: float = 5.0, partitions: Optional[list] = None) -> Any:
    """A connection holding this topic's stream lock (close it to release); ``StreamFenced`` when taken.

    ``partitions``: a worker's (``--worker``) locks, one per partition it streams, instead of the
    topic's (which the process that started the workers holds).
    Tried again for ``wait_s``: a stream that has just exited releases its lock only once its server
    backend has seen the connection close (through a proxy or pooler, a moment later), and a restart
    right after it must not be refused for that."""
    keys = [f"lake-stream:{topic}"] if partitions is None else [f"lake-stream:{topic}:{p}" for p in partitions]
    conn = hs.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for key in keys:
            if not _try_lock(cur, key, time.monotonic() + wait_s):
                cur.execute(
                    "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                    "USING (pid) WHERE l.locktype = 'advisory' AND l.objid = hashtext(%s)::oid AND l.granted",
                    (key,),
                )
                row = cur.fetchone()
                conn.close()
                holder = f" (PostgreSQL backend pid {row[0]}, since {row[2]:%Y-%m-%d %H:%M:%S})" if row else ""
                what = f"topic {topic}" if partitions is None else f"partition {key.rsplit(':', 1)[1]} of {topic}"
                raise StreamFenced(f"another lake stream is running on {what} for this hot store{holder}")
    return conn


def _try_lock(cur: Any, key: str, deadline: float) -> bool:
    while True:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
        if cur.fetchone()[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def now_ms() -> int:
    return int(time.time() * 1000)
