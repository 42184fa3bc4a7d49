"""Run a job's quality gate in a second process, started when the job starts.

Importing Great Expectations costs 3 to 4 s of one core, and every gated
job pays it; measured, that import was most of the gap between ``lake gold``
and the same work in plain DuckDB SQL. A job that calls ``start()`` first
gets a process that imports it (on the machine's other core) while Beam
reads and computes; the gate then runs there on the batch's tables, and only
the result, plain data (``quality.results``), comes back.

Without ``start()`` (a runner on other machines, ``lake validate``), the
gate runs in the calling process as before.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

from .results import GateResult

__all__ = ["start", "stop", "gate_process", "run_suites"]

_EXECUTOR: Optional[ProcessPoolExecutor] = None


def _warm() -> None:
    from lake.helper_processes import init_helper

    init_helper()
    import quality.runner  # noqa: F401  (Great Expectations, pandas: the expensive part)


def _ready() -> bool:
    return True


def start() -> None:
    """Start the gate process now, so its imports overlap the job's work. Idempotent."""
    global _EXECUTOR
    if _EXECUTOR is None:
        # spawn, not fork: the job's process runs gRPC and librdkafka threads that a fork would copy mid-flight.
        _EXECUTOR = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_warm)
        _EXECUTOR.submit(_ready)


def stop() -> None:
    global _EXECUTOR
    if _EXECUTOR is not None:
        _EXECUTOR.shutdown(wait=True, cancel_futures=True)
        _EXECUTOR = None


@contextlib.contextmanager
def gate_process(enabled: bool):
    """``start()`` on entry when ``enabled`` (a gated job on the local runner), ``stop()`` on exit."""
    if not enabled or _EXECUTOR is not None or os.environ.get("LAKE_GATE_PROCESS", "1") == "0":
        yield  # off, or started by an outer caller who stops it (LAKE_GATE_PROCESS=0: gate in this process)
        return
    start()
    try:
        yield
    finally:
        stop()


def _run_here(lake_root: str, layer: str, key: str, batches: list, parameters, overrides) -> GateResult:
    from .runner import run_suites as run

    return run(lake_root, layer, key, batches, parameters=parameters, overrides=overrides)


def run_suites(lake_root: str, layer: str, key: str, batches: list, parameters: Optional[dict] = None,
               overrides: Optional[dict] = None) -> GateResult:
    """``quality.runner.run_suites``, in the gate process when one was started."""
    if _EXECUTOR is None:
        return _run_here(lake_root, layer, key, batches, parameters, overrides)
    # Arrow tables pickle as their buffers: sending a batch costs a copy, not a conversion.
    return _EXECUTOR.submit(_run_here, lake_root, layer, key, batches, parameters, overrides).result()
