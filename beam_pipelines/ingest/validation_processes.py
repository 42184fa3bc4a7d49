"""Validate Kafka batches in helper processes while the runner reads the next ones.

The local runner (FnApiRunner) runs one worker: with more it dropped
deferred splittable-DoFn work. Everything the ingest does then shares one
core, and validating (JSON decode, contract checks, Arrow columns) is half
of the work. Validation is pure and per batch, so ``ValidateTelemetry``
hands it to these processes and keeps reading. Measured on 2 cores, 1M
snapshots, three runs each, end to end: 82K events/s validating in the
runner's process, 88K with two helpers (and 80K with one: the runner's
process then waits on it).

Started once per ``lake ingest`` before Beam is imported
(``lake_core.processes``); the workers import only ``batches`` (pyarrow
and the contract). A worker that
dies does not lose a batch: the caller validates it itself (``result``)
and stops using the pool; a worker whose ingest died leaves too. On Flink
or Dataflow nothing is started and each Beam worker validates in its own
process.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from typing import Optional

from beam_pipelines.ingest.batches import KafkaBatch, ValidatedBatch, validate_batch
from lake_core.errors import ConfigError
from lake_core.processes import HelperPool
from lake_core.settings import env

__all__ = ["default_processes", "start", "stop", "validation_processes", "submit", "in_flight_limit"]

LOG = logging.getLogger(__name__)
ENV = "LAKE_VALIDATE_PROCESSES"


def default_processes() -> int:
    """One per core, at most 4; ``LAKE_VALIDATE_PROCESSES`` overrides.

    Not one fewer than the cores, as the runner's own process might seem to
    need: it spends much of a pass waiting (on the broker, on these
    processes). Measured on 2 cores (see the module's docstring), one helper
    gained nothing and two gained about 7%.
    """
    configured = env(ENV) or ""
    if configured:
        if not configured.isdigit():
            raise ConfigError(f"{ENV} must be a whole number of processes (0: none), not {configured!r}")
        return int(configured)
    return min(os.cpu_count() or 1, 4)


_POOL = HelperPool("beam_pipelines.ingest.batches", ignore_interrupts=True)  # pyarrow, msgspec, the contract


def start(processes: int) -> None:
    """Start ``processes`` validation processes now (0: validate in the runner). Idempotent."""
    _POOL.start(processes)


def stop() -> None:
    _POOL.stop()


def validation_processes(processes: int) -> AbstractContextManager[None]:
    """``start(processes)`` on entry, ``stop()`` on exit (unless an outer caller started them)."""
    return _POOL.running(processes)


def in_flight_limit() -> int:
    """Batches a caller may have submitted and not yet collected: enough to keep every process busy."""
    return 2 * _POOL.processes + 1


def _broken(exc: BaseException) -> None:
    LOG.error("validation process failed (%s): validating in the runner's process from now on", exc)
    _POOL.abandon()


def submit(batch: KafkaBatch) -> Optional[Future]:
    """The batch's validation, running in a helper process; None when there is none to run it."""
    if _POOL.executor is None:
        return None
    try:
        return _POOL.submit(validate_batch, batch)
    except (BrokenProcessPool, RuntimeError) as exc:  # RuntimeError: the pool was shut down
        _broken(exc)
        return None


def result(future: Future, batch: KafkaBatch) -> ValidatedBatch:
    """The future's ``ValidatedBatch``; if its process died, the batch validated here instead."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        _broken(exc)
        return validate_batch(batch)
