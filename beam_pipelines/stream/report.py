"""What a ``lake stream`` run reports: its passes (one per local pass, per worker with ``--workers``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["StreamPass", "StreamReport", "Progress"]


Progress = Callable[[int, "StreamPass"], None]


@dataclass
class StreamPass:
    records: int = 0
    commits: int = 0
    alert_events: int = 0
    seconds: float = 0.0
    pg_waits: int = 0
    ended_by: dict = field(default_factory=dict)
    busy_ms: dict = field(default_factory=dict)


@dataclass
class StreamReport:
    passes: list = field(default_factory=list)
    published: int = 0
    webhook_posted: int = 0
    dropped_partitions: list = field(default_factory=list)

    def total(self, attr: str) -> float:
        return sum(getattr(p, attr) for p in self.passes)
