"""Store and forward: what a vehicle does when its uplink is down.

``SpoolingSender`` wraps another sender. While the downstream sender
accepts messages it is a pass-through; once it fails, every message goes
to a local spool file (the ``JsonlSender`` format) until a replay delivers
the backlog, oldest first, and the pass-through resumes. Order is kept:
while a backlog exists new messages join its end, never jump ahead of it.
A spool left by an earlier run is replayed by the next one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Union

from lake.errors import LakeError

from .senders import JsonlSender, Sender, read_jsonl

#: What a downstream sender raises when it cannot take a message now.
DOWNSTREAM_ERRORS = (LakeError, OSError, BufferError)


class SpoolingSender:
    def __init__(self, downstream: Sender, spool_path: Union[str, os.PathLike], retry_every_s: float = 5.0):
        self.downstream = downstream
        self.spool_path = Path(spool_path)
        self.retry_every_s = retry_every_s
        self.spooled = sum(1 for _ in read_jsonl(self.spool_path)) if self.spool_path.exists() else 0
        self.replayed = 0
        self._spool: JsonlSender | None = None
        self._next_retry = 0.0

    @property
    def backlog(self) -> int:
        """Messages waiting in the spool."""
        return self.spooled

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        if self.spooled and time.monotonic() >= self._next_retry:
            self.replay()
        if not self.spooled:
            try:
                self.downstream.send(key, value, timestamp_ms)
                return
            except DOWNSTREAM_ERRORS:
                self._next_retry = time.monotonic() + self.retry_every_s
        self._append(key, value, timestamp_ms)

    def _append(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        if self._spool is None:
            self._spool = JsonlSender(self.spool_path, append=True)
        self._spool.send(key, value, timestamp_ms)
        self.spooled += 1

    def replay(self) -> int:
        """Send the backlog downstream, oldest first; return how many went. What fails stays spooled."""
        if not self.spooled:
            return 0
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        records = list(read_jsonl(self.spool_path))
        sent = 0
        try:
            for key, value, ts in records:
                self.downstream.send(key, value, ts)
                sent += 1
        except DOWNSTREAM_ERRORS:
            self._next_retry = time.monotonic() + self.retry_every_s
        self._rewrite(records[sent:])
        self.replayed += sent
        return sent

    def _rewrite(self, remaining: list) -> None:
        if not remaining:
            self.spool_path.unlink(missing_ok=True)
            self.spooled = 0
            return
        tmp = self.spool_path.with_name(self.spool_path.name + ".tmp")
        writer = JsonlSender(tmp)
        for key, value, ts in remaining:
            writer.send(key, value, ts)
        writer.close()
        os.replace(tmp, self.spool_path)  # a crash leaves the old spool or the new one, never half
        self.spooled = len(remaining)

    def flush(self) -> None:
        self.replay()
        self.downstream.flush()
        if self.spooled:
            raise LakeError(f"{self.spooled:,} messages wait in {self.spool_path}: the uplink is down; "
                            "they are sent by the next run")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._spool is not None:
                self._spool.close()
                self._spool = None
            self.downstream.close()
