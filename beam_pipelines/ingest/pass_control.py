"""What a local pass's driver and its Kafka readers share: ``PassControl``.

The driver (``pipeline.run_pass``) creates one per pass and hands it to
``ReadKafkaPartitions``; the readers record there why each partition ended
its pass and how much it read, and watch the run's stop request. The driver
reads ``ended_by`` once the pass is over.

A DoFn is pickled on its way to the runner, so a plain attribute would give
each reader a copy. ``PassControl`` pickles as its ``pass_id`` and resolves,
in the process that unpickles it, to the live object of that id: on the local
runner (one process) readers and driver share it. A worker in another process
(Flink, Dataflow, PortableRunner) gets a control of its own, with no stop
request: those runners are stopped by cancelling the job. What the driver
needs from such readers, why each partition ended, also travels as Beam
counters (``ENDED_BY_PREFIX``, read back by ``ended_by_counters``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar, Optional

__all__ = ["PassControl", "ReaderState", "TopicQuiet", "ENDED_BY_PREFIX", "ended_by_counter", "ended_by_counters"]

#: Beam counters ``ended_by.<partition>.<reason>``: a reader ended its partition's pass for that reason.
ENDED_BY_PREFIX = "ended_by."


def ended_by_counter(partition: int, reason: str) -> str:
    return f"{ENDED_BY_PREFIX}{partition}.{reason}"


def ended_by_counters(counters: dict) -> dict[int, str]:
    """``{partition: reason}`` from a pass's counters (those named by ``ended_by_counter``)."""
    ended = {}
    for name, value in counters.items():
        if name.startswith(ENDED_BY_PREFIX) and value:
            partition, reason = name[len(ENDED_BY_PREFIX) :].split(".", 1)
            ended[int(partition)] = reason
    return ended


@dataclass
class ReaderState:
    """One partition's reader within a pass."""

    started: float
    bytes_read: int = 0
    records: int = 0


@dataclass
class TopicQuiet:
    """When any partition of the pass last delivered a record.

    Idleness is the topic's, not a partition's: the local runner serves the
    partitions in turn, so the time since one partition was last visited
    says nothing. A reader ends on idleness when its own poll came back
    empty and no partition has delivered anything for ``idle_seconds``.
    """

    last_record: float
    buffer_full: bool = False  # one partition filled its buffer: the pass flushes for all


@dataclass(eq=False)
class PassControl:
    pass_id: str
    stop: threading.Event = field(default_factory=threading.Event)  # the run's: set on the first Ctrl-C
    readers: dict[int, ReaderState] = field(default_factory=dict)
    quiet: Optional[TopicQuiet] = None
    #: partition -> why its reader ended the pass: "idle", "time", "bytes" or "stop".
    ended_by: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # The live controls of this process, by pass id: what an unpickled reference resolves to.
    _LIVE: ClassVar[dict[str, PassControl]] = {}
    _LIVE_LOCK: ClassVar[threading.Lock] = threading.Lock()

    def __post_init__(self) -> None:
        with PassControl._LIVE_LOCK:
            PassControl._LIVE[self.pass_id] = self

    def __reduce__(self) -> tuple:
        return (PassControl.resolve, (self.pass_id,))

    @staticmethod
    def resolve(pass_id: str) -> PassControl:
        """The live control of ``pass_id`` in this process (a new one in a process that has none)."""
        with PassControl._LIVE_LOCK:
            live = PassControl._LIVE.get(pass_id)
        return live if live is not None else PassControl(pass_id)

    def close(self) -> None:
        """The pass is over: forget it (its ``ended_by`` stays readable on this object)."""
        with PassControl._LIVE_LOCK:
            PassControl._LIVE.pop(self.pass_id, None)

    def reader(self, partition: int) -> tuple[ReaderState, TopicQuiet]:
        """The state of ``partition``'s reader and of the topic, created at the first visit."""
        now = time.monotonic()
        with self._lock:
            state = self.readers.setdefault(partition, ReaderState(now))
            if self.quiet is None:
                self.quiet = TopicQuiet(now)
            return state, self.quiet

    def end(self, partition: int, reason: str) -> None:
        with self._lock:
            self.ended_by[partition] = reason
