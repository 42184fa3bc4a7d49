"""Store and forward: what a vehicle does so that no message is lost while its uplink is down.

``SpoolingSender`` wraps another sender (Kafka, MQTT, any ``Sender``). Every
message goes into a durable spool first (``edge_client.spool``: byte-exact,
CRC-checked, survives kill -9) and is removed only after the uplink confirmed
it. Confirmed means: the downstream's ``flush()`` returned without error
after the message was handed to it. For Kafka that is the producer's flush
with no delivery failure reported; for MQTT, every QoS 1 PUBACK.

Windows: ``send`` appends to the spool and, while the uplink is up, hands
the message on. Every ``sync_every_records`` messages or ``sync_every_s``
seconds (checked in ``send``; there is no background thread), and at
``flush``/``sync``/``close``, the spool is fsynced; then the downstream is
flushed and what it confirmed is acknowledged in the spool. So after
``sync()`` or ``flush()`` returned, every message sent so far survives
kill -9 and power loss; a crash re-sends at most the unconfirmed ones
(at-least-once: the lake removes duplicates by event_id).

Down: a downstream that refuses a message, or whose flush fails or times out
(``confirm_timeout_s``), marks the uplink down: new messages only join the
spool. Every ``retry_every_s`` the backlog is replayed oldest first, one
window at a time, each confirmed before the next; the pass-through resumes
once the spool is empty, so order per vehicle is kept. A flush that timed out
keeps its messages "in flight" (they may still arrive and are confirmed by a
later flush); a flush that reported failures re-sends everything unconfirmed.

Full: the spool holds at most ``max_bytes``; then ``send`` raises
``SpoolFullError`` (naming the file and its size) and the oldest messages are
kept: they are the ones nothing else has, and the caller learns that it
must shed load instead of losing data silently.

``downstream`` may also be a callable that builds the sender (e.g.
``functools.partial(KafkaSender, bootstrap, topic)``): a vehicle that starts
without a network then spools and connects at the next retry.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from typing import Callable, Optional, Union

from edge_client.errors import DeliveryError, EdgeError, UplinkUnavailableError
from edge_client.senders import Sender
from edge_client.spool import DEFAULT_MAX_BYTES, Spool, SpoolFullError, record_size

__all__ = ["SpoolingSender", "SpoolFullError", "DOWNSTREAM_ERRORS"]

log = logging.getLogger(__name__)

#: What a downstream sender raises when it cannot take or confirm a message now. Not
#: ``EdgeConfigError`` (a wrong or revoked secret, a bad setting): waiting does not cure it, so it
#: reaches the caller at once, with everything unconfirmed still in the spool.
DOWNSTREAM_ERRORS = (UplinkUnavailableError, DeliveryError, OSError, BufferError)


def _takes_timeout(method) -> bool:
    try:
        return "timeout_s" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class SpoolingSender:
    """A ``Sender`` that keeps every message its uplink has not confirmed in a durable spool.

    ``downstream``: the uplink sender, or a callable that connects one (retried while it raises).
    ``spool_path``: the spool file (``<path>.ack`` beside it); a spool left by an earlier run is replayed.
    ``retry_every_s``: how often a down uplink is tried again (at a ``send``; ``flush`` tries at once).
    ``max_bytes``: the spool file's size limit; beyond it ``send`` raises ``SpoolFullError``.
    ``sync_every_records`` / ``sync_every_s``: the window after which the spool is fsynced and the
    uplink flushed to confirm; ``sync()`` and ``flush()`` end a window at once.
    ``confirm_timeout_s``: how long a confirming flush may wait before the uplink counts as down.
    Not thread-safe: one sender per thread, like the senders it wraps.
    """

    def __init__(
        self,
        downstream: Union[Sender, Callable[[], Sender]],
        spool_path: Union[str, os.PathLike],
        retry_every_s: float = 5.0,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sync_every_records: int = 50_000,
        sync_every_s: float = 1.0,
        confirm_timeout_s: float = 5.0,
    ):
        self.retry_every_s = retry_every_s
        self.sync_every_records = sync_every_records
        self.sync_every_s = sync_every_s
        self.confirm_timeout_s = confirm_timeout_s
        self._spool = Spool(spool_path, max_bytes=max_bytes)
        self.spool_path = self._spool.path
        self.spooled = 0  # messages this sender appended to the spool
        self.replayed = 0  # messages it re-sent from the spool
        self._append = self._spool.append
        self._pending_at_open = self._spool.pending_records
        self._confirmed = 0
        # The downstream holds, unconfirmed, the records from the spool's ``acked`` to ``_handed``
        # (``_handed_records`` of them). While up, every record is handed: ``_handed`` is the spool's end.
        self._handed = self._spool.acked
        self._handed_records = 0
        self._since_sync = 0
        self._sync_due = time.monotonic() + sync_every_s
        self._next_retry = 0.0
        self._up = False
        self._down_reported = False
        self.downstream: Optional[Sender] = None
        self._connect: Optional[Callable[[], Sender]] = None
        if hasattr(downstream, "send"):
            self._attach(downstream)
        else:
            self._connect = downstream
            self._try_connect()
        self._up = self.downstream is not None and not self._pending_at_open
        if self._pending_at_open:
            log.info("spool %s: %d messages from an earlier run wait for the uplink", self.spool_path, self.backlog)

    # -- counters ---------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Messages in the spool the uplink has not confirmed."""
        return self._pending_at_open + self.spooled - self._confirmed

    @property
    def spool_bytes(self) -> int:
        """The spool file's size now (its bound is ``spool_max_bytes``)."""
        return self._spool.size_bytes

    @property
    def spool_max_bytes(self) -> int:
        return self._spool.max_bytes

    @property
    def skipped_torn(self) -> int:
        """Damaged stretches (torn or corrupt records) skipped when the spool was opened."""
        return self._spool.skipped_torn

    @property
    def uplink_up(self) -> bool:
        return self._up

    # -- the Sender protocol ----------------------------------------------------------------------

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        """Spool the message (``SpoolFullError`` when full) and, while the uplink is up, hand it on."""
        self._append(key, value, timestamp_ms)
        self.spooled += 1
        if self._up:
            try:
                self._send_downstream(key, value, timestamp_ms)
            except DOWNSTREAM_ERRORS as exc:
                self._handed = self._spool.end - record_size(key, value)
                self._go_down(exc, rewind=False)
            else:
                self._handed_records += 1
        self._since_sync += 1
        if self._since_sync >= self.sync_every_records:
            self._end_window()
        else:
            now = time.monotonic()
            if now >= self._sync_due or (not self._up and now >= self._next_retry):
                self._end_window()

    def sync(self) -> None:
        """Make every message sent so far durable in the spool (fsync); the uplink is not asked."""
        self._spool.sync()

    def flush(self) -> None:
        """Sync, confirm or replay now; raise ``DeliveryError`` if messages still wait for the uplink."""
        self._spool.sync()
        self._since_sync, self._sync_due = 0, time.monotonic() + self.sync_every_s
        if self._up:
            self._confirm()
        if not self._up:
            self._retry()
        if self.backlog:
            raise DeliveryError(
                f"{self.backlog:,} messages wait in {self.spool_path}: the uplink is down; "
                "they are sent by the next run"
            )

    def close(self) -> None:
        """Flush, then release the uplink and the spool; raise ``DeliveryError`` if messages wait."""
        try:
            self.flush()
        except EdgeError:
            if self.downstream is not None:  # what it still holds is spooled: do not wait for it
                with contextlib.suppress(*DOWNSTREAM_ERRORS):
                    self._close_downstream(min(self.confirm_timeout_s, 1.0))
            self._spool.close()
            raise
        try:
            if self.downstream is not None:
                self._close_downstream(self.confirm_timeout_s)
        finally:
            self._spool.close(remove_if_empty=not self.backlog)

    # -- the uplink -------------------------------------------------------------------------------

    def _attach(self, downstream: Sender) -> None:
        self.downstream = downstream
        self._send_downstream = downstream.send
        self._flush_takes_timeout = _takes_timeout(downstream.flush)
        self._close_takes_timeout = _takes_timeout(downstream.close)

    def _try_connect(self) -> bool:
        assert self._connect is not None
        try:
            self._attach(self._connect())
        except DOWNSTREAM_ERRORS as exc:
            self._go_down(exc, rewind=False)  # the next try counts from now: connecting may take a while
            return False
        return True

    def _flush_downstream(self) -> None:
        if self._flush_takes_timeout:
            self.downstream.flush(timeout_s=self.confirm_timeout_s)
        else:
            self.downstream.flush()

    def _close_downstream(self, timeout_s: float) -> None:
        if self._close_takes_timeout:
            self.downstream.close(timeout_s=timeout_s)
        else:
            self.downstream.close()

    def _go_down(self, exc: BaseException, rewind: bool) -> None:
        if not self._down_reported:  # once per outage, not at every retry
            log.warning("uplink down (%s); spooling to %s", str(exc), self.spool_path)
            self._down_reported = True
        self._up = False
        if rewind:  # the uplink lost some of what it held, we cannot tell which: re-send all unconfirmed
            self._handed = self._spool.acked
            self._handed_records = 0
        self._next_retry = time.monotonic() + self.retry_every_s

    def _confirm(self) -> bool:
        """Flush the downstream; on success acknowledge what it held. False (and down) when it failed."""
        if self._up:
            self._handed = self._spool.end
        try:
            self._flush_downstream()
        except UplinkUnavailableError as exc:  # still queued in the uplink: it may yet arrive
            self._go_down(exc, rewind=False)
            return False
        except DOWNSTREAM_ERRORS as exc:
            self._go_down(exc, rewind=True)
            return False
        if self._handed_records:
            self._spool.acknowledge(self._handed)
            self._confirmed += self._handed_records
            self._handed_records = 0
        return True

    def _end_window(self) -> None:
        self._spool.sync()
        self._since_sync, self._sync_due = 0, time.monotonic() + self.sync_every_s
        if self._up:
            self._confirm()
        elif time.monotonic() >= self._next_retry:
            self._retry()

    def _retry(self) -> None:
        """Confirm what the uplink holds, then replay the rest window by window; up again once all confirmed."""
        self._next_retry = time.monotonic() + self.retry_every_s
        if self.downstream is None and not self._try_connect():
            return
        if self._handed_records and not self._confirm():
            return
        replayed = 0
        while batch := self._spool.read(self._handed, self.sync_every_records):
            for record in batch:
                try:
                    self._send_downstream(record.key, record.value, record.timestamp_ms)
                except DOWNSTREAM_ERRORS as exc:
                    self._go_down(exc, rewind=False)
                    return
                self._handed = record.end
                self._handed_records += 1
                self.replayed += 1
                replayed += 1
            if not self._confirm():
                return
        if not self._confirm():
            return
        if self._down_reported:
            log.info("uplink back; replayed %d spooled messages from %s", replayed, self.spool_path)
        self._up = True
        self._down_reported = False
