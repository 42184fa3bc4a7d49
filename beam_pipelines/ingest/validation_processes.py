"""Validate Kafka batches in helper processes while the runner reads the next ones.

The local runner (FnApiRunner) runs one worker: with more it dropped
deferred splittable-DoFn work. Everything the ingest does then shares one
core, and validating (JSON decode, contract checks, Arrow columns) is half
of the work. Validation is pure and per batch, so ``ValidateTelemetry``
hands it to these processes and keeps reading. Measured on 2 cores, 1M
snapshots, three runs each, end to end: 82K events/s validating in the
runner's process, 88K with two helpers (and 80K with one: the runner's
process then waits on it).

Started once per ``lake ingest`` before Beam is imported (``spawn``, not
``fork``: the job's process later runs gRPC and librdkafka threads); the
workers import only ``batches`` (pyarrow and the contract). A worker that
dies does not lose a batch: the caller validates it itself (``result``)
and stops using the pool; a worker whose ingest died leaves too. On Flink
or Dataflow nothing is started and each Beam worker validates in its own
process.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Optional

from .batches import KafkaBatch, ValidatedBatch, validate_batch

__all__ = ["default_processes", "start", "stop", "validation_processes", "submit", "in_flight_limit"]

LOG = logging.getLogger(__name__)
ENV = "LAKE_VALIDATE_PROCESSES"

_EXECUTOR: Optional[ProcessPoolExecutor] = None
_PROCESSES = 0


def default_processes() -> int:
    """One per core, at most 4; ``LAKE_VALIDATE_PROCESSES`` overrides.

    Not one fewer than the cores, as the runner's own process might seem to
    need: it spends much of a pass waiting (on the broker, on these
    processes). Measured on 2 cores (see the module's docstring), one helper
    gained nothing and two gained about 7%.
    """
    configured = (os.environ.get(ENV) or "").strip()
    if configured:
        if not configured.isdigit():
            from lake.errors import ConfigError

            raise ConfigError(f"{ENV} must be a whole number of processes (0: none), not {configured!r}")
        return int(configured)
    return min(os.cpu_count() or 1, 4)


def _warm() -> None:
    from lake.helper_processes import init_helper

    init_helper(ignore_interrupts=True)  # the first Ctrl-C finishes the pass in flight: with these processes
    import beam_pipelines.ingest.batches  # noqa: F401  (pyarrow, msgspec, the contract)


def _ready() -> bool:
    return True


def start(processes: int) -> None:
    """Start ``processes`` validation processes now (0: validate in the runner). Idempotent."""
    global _EXECUTOR, _PROCESSES
    if _EXECUTOR is not None or processes <= 0:
        return
    _EXECUTOR = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_warm)
    _PROCESSES = processes
    for _ in range(processes):
        _EXECUTOR.submit(_ready)


def stop() -> None:
    global _EXECUTOR, _PROCESSES
    if _EXECUTOR is not None:
        _EXECUTOR.shutdown(wait=True, cancel_futures=True)
        _EXECUTOR, _PROCESSES = None, 0


@contextlib.contextmanager
def validation_processes(processes: int):
    """``start(processes)`` on entry, ``stop()`` on exit (unless an outer caller started them)."""
    if _EXECUTOR is not None or processes <= 0:
        yield
        return
    start(processes)
    try:
        yield
    finally:
        stop()


def in_flight_limit() -> int:
    """Batches a caller may have submitted and not yet collected: enough to keep every process busy."""
    return 2 * _PROCESSES + 1


def _broken(exc: BaseException) -> None:
    global _EXECUTOR, _PROCESSES
    LOG.error("validation process failed (%s): validating in the runner's process from now on", exc)
    executor, _EXECUTOR, _PROCESSES = _EXECUTOR, None, 0
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


def submit(batch: KafkaBatch) -> Optional[Future]:
    """The batch's validation, running in a helper process; None when there is none to run it."""
    if _EXECUTOR is None:
        return None
    try:
        return _EXECUTOR.submit(validate_batch, batch)
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
