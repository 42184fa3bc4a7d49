"""``UpdateHotStore``: ``KafkaBatch`` elements -> per-partition state (Beam state and timers) -> PostgreSQL.

Keyed by Kafka partition, not by vehicle: a vehicle's messages all arrive
on one partition (the record key is its id), so the partition's state holds
its vehicles' states (``engine.PartitionState``), and one element (a batch
of thousands of records) is applied and committed, outputs with offsets, in
one transaction. Keyed per vehicle, Beam would handle one element per event
(per-element cost is what makes Beam slow in Python) and a batch's commit
would be split across keys.

The state lives in a ``ReadModifyWriteState``: the runner's own state
(checkpointed by Flink or Dataflow). A processing-time timer (``TICK``) runs
the ``offline`` rule while following the topic. On the local runner a pass's
state is also handed to the driver (``StateHandoff``), which saves it with
its offset when the pass ends; the next pass starts from there.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any, ClassVar, Iterator, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_pipelines.ingest.batches import KafkaBatch
from beam_pipelines.stream.engine import PartitionState
from beam_pipelines.stream.store import HotCommitter
from lake_schemas.geofence import OperatingArea
from lake_schemas.hot import HotRules

__all__ = ["UpdateHotStore", "StateHandoff", "NAMESPACE"]

NAMESPACE = "lake.stream"
TICK_SECONDS = 5.0


class StateHandoff:
    """The latest state of each partition in this process's pass, for its driver (local runner only).

    Pickles as its id and resolves, in the process that unpickles it, to the
    live object (a worker of a distributed runner gets an empty one)."""

    _LIVE: ClassVar[dict[str, "StateHandoff"]] = {}
    _LOCK: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, handoff_id: str):
        self.handoff_id = handoff_id
        self.states: dict[int, tuple[PartitionState, int]] = {}
        with StateHandoff._LOCK:
            StateHandoff._LIVE[handoff_id] = self

    def __reduce__(self) -> tuple:
        return (StateHandoff.resolve, (self.handoff_id,))

    @staticmethod
    def resolve(handoff_id: str) -> "StateHandoff":
        with StateHandoff._LOCK:
            live = StateHandoff._LIVE.get(handoff_id)
        return live if live is not None else StateHandoff(handoff_id)

    def close(self) -> None:
        with StateHandoff._LOCK:
            StateHandoff._LIVE.pop(self.handoff_id, None)


_STATE = ReadModifyWriteStateSpec("partition_state", PickleCoder())  # (PartitionState, committed offset)
_TICK = TimerSpec("tick", TimeDomain.REAL_TIME)


class _UpdatePartition(beam.DoFn):
    def __init__(
        self,
        dsn: str,
        topic: str,
        area: OperatingArea,
        rules: HotRules,
        following: bool,
        snapshot_seconds: float,
        commit_seconds: float,
        handoff: StateHandoff,
        streaming_runner: bool,
    ):
        self._dsn = dsn
        self._topic = topic
        self._area = area
        self._rules = rules
        self._following = following
        self._snapshot_seconds = snapshot_seconds
        self._commit_seconds = commit_seconds
        self._handoff = handoff
        self._streaming = streaming_runner
        self.records = Metrics.counter(NAMESPACE, "records")
        self.commits = Metrics.counter(NAMESPACE, "commits")
        self.alert_events = Metrics.counter(NAMESPACE, "alert_events")
        self.commit_ms = Metrics.counter(NAMESPACE, "commit_ms")
        self.apply_ms = Metrics.counter(NAMESPACE, "apply_ms")
        self.lag_ms = Metrics.distribution(NAMESPACE, "commit_lag_ms")  # record timestamp -> committed

    def setup(self) -> None:
        self._committer = HotCommitter(self._dsn, self._topic)
        self._saved_at: dict[int, float] = {}
        self._committed_at: dict[int, float] = {}

    def teardown(self) -> None:
        self._committer.close()

    def _state(self, partition: int, state: Any) -> tuple[PartitionState, int]:
        # The local runner: the pass's state stays a live object here (the handoff), not in Beam's state.
        # FnApiRunner keeps Beam state in memory only, and pickled the whole partition after every bundle
        # (measured: 35% of the stream's time while following); between passes PostgreSQL holds it.
        held = self._handoff.states.get(partition) if not self._streaming else state.read()
        if held is not None:
            return held
        ps, committed = self._committer.load(partition, self._rules)
        # A saved state older than the committed outputs: its records are applied again, not written again.
        ps.replay_until = committed if ps.next_offset < committed else None
        self._saved_at[partition] = time.monotonic()
        return ps, committed

    def process(
        self,
        element: tuple[int, KafkaBatch],
        state: Any = beam.DoFn.StateParam(_STATE),
        tick: Any = beam.DoFn.TimerParam(_TICK),
    ) -> Iterator[Any]:
        partition, batch = element
        ps, committed = self._state(partition, state)
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        offsets, stamps, values = batch.offsets, batch.timestamps, batch.values
        if ps.replay_until is not None:
            # A saved state older than the committed outputs: the records up to them are applied again
            # (the state needs them) but not written again (the store holds their rows and events).
            cut = bisect.bisect_left(offsets, ps.replay_until)
            ps.apply(offsets[:cut], stamps[:cut], values[:cut], self._area, now_ms)
            ps.discard_pending_output()
            ps.counts.clear()
            if cut < len(offsets) or ps.next_offset >= ps.replay_until:
                ps.replay_until = None
            offsets, stamps, values = offsets[cut:], stamps[cut:], values[cut:]
        ps.apply(offsets, stamps, values, self._area, now_ms)
        if self._following and ps.replay_until is None:
            ps.tick(now_ms)
        self.apply_ms.inc(int((time.perf_counter() - started) * 1000))
        self.records.inc(len(batch.offsets))
        committed = self._commit(ps, committed)
        if self._streaming:
            state.write((ps, committed))
        self._handoff.states[partition] = (ps, committed)
        if batch.timestamps and committed >= ps.next_offset:
            self.lag_ms.update(max(0, int(time.time() * 1000) - max(batch.timestamps)))
        if self._streaming:
            # Streaming runners: the clock's next look at silent vehicles. The local runner fires timers after
            # every bundle (each firing reads the partition's state back), and ticks after every batch anyway.
            tick.set(Timestamp.now() + Duration(seconds=TICK_SECONDS))
        return iter(())

    @on_timer(_TICK)
    def on_tick(
        self,
        key: Any = beam.DoFn.KeyParam,
        state: Any = beam.DoFn.StateParam(_STATE),
        tick: Any = beam.DoFn.TimerParam(_TICK),
    ) -> Iterator[Any]:
        held = state.read()
        if held is None:
            return iter(())
        ps, committed = held
        if ps.replay_until is None:
            if self._following:
                ps.tick(int(time.time() * 1000))
            committed = self._commit(ps, committed)  # and what an interval held back
            state.write((ps, committed))
            self._handoff.states[key] = (ps, committed)
        if self._streaming:  # the local runner fires timers after every bundle: re-arming there would spin
            tick.set(Timestamp.now() + Duration(seconds=TICK_SECONDS))
        return iter(())

    def _commit(self, ps: PartitionState, committed: int) -> int:
        if ps.replay_until is not None:
            return committed  # still replaying: nothing new to write
        now = time.monotonic()
        snapshot = now - self._saved_at.get(ps.partition, 0.0) >= self._snapshot_seconds
        if not snapshot and now - self._committed_at.get(ps.partition, 0.0) < self._commit_seconds:
            return committed  # coalesce: a vehicle's rows are written once per interval, not once per batch
        self._committed_at[ps.partition] = now
        drained = ps.drain()
        if not drained and not ps.counts and not snapshot and ps.next_offset == committed:
            return committed
        started = time.perf_counter()
        counts = dict(ps.counts)
        ps.counts.clear()
        committed = self._committer.commit(ps, drained, committed, counts, snapshot)
        if snapshot:
            self._saved_at[ps.partition] = time.monotonic()
        self.commit_ms.inc(int((time.perf_counter() - started) * 1000))
        self.commits.inc()
        self.alert_events.inc(len(drained.events))
        return committed


class UpdateHotStore(beam.PTransform):
    """``(partition, KafkaBatch)`` -> the hot store, committed batch by batch; emits nothing."""

    def __init__(
        self,
        dsn: str,
        topic: str,
        area: OperatingArea,
        rules: HotRules,
        following: bool,
        snapshot_seconds: float,
        commit_seconds: float = 1.0,
        handoff: Optional[StateHandoff] = None,
        streaming_runner: bool = True,
    ):
        super().__init__()
        self._fn = _UpdatePartition(
            dsn,
            topic,
            area,
            rules,
            following,
            snapshot_seconds,
            commit_seconds,
            handoff if handoff is not None else StateHandoff("unused"),
            streaming_runner,
        )

    def expand(self, keyed: Any) -> Any:
        return keyed | "UpdatePartition" >> beam.ParDo(self._fn)
