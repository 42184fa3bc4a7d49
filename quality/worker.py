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
import logging
from typing import Iterator, Optional

from lake_core.processes import HelperPool
from lake_core.settings import env
from quality.results import GateResult

__all__ = ["start", "stop", "gate_process", "run_suites", "finish_docs"]

LOG = logging.getLogger(__name__)
_POOL = HelperPool("quality.runner")  # Great Expectations, pandas: the expensive part
_DOCS: list = []  # the gate process's Data Docs builds not yet waited for (``finish_docs``)


def start() -> None:
    """Start the gate process now, so its imports overlap the job's work. Idempotent."""
    _POOL.start(1)


def stop() -> None:
    finish_docs()
    _POOL.stop()


@contextlib.contextmanager
def gate_process(enabled: bool) -> Iterator[None]:
    """``start()`` on entry when ``enabled`` (a gated job on the local runner); on exit, once the Data Docs
    of its gates are built (``finish_docs``), the process is told to stop, without waiting for it;
    nothing when an outer caller started it (it stops it) or ``LAKE_GATE_PROCESS=0`` (gate in this
    process)."""
    # Not waiting for it to exit: tearing down Great Expectations' interpreter took 1.2 s of the
    # Silver job's 22 s at 1M events (measured), after the job's work was done.
    with _POOL.running(1 if enabled and (env("LAKE_GATE_PROCESS") or "1") != "0" else 0, wait=False):
        try:
            yield
        finally:
            finish_docs()


def finish_docs() -> None:
    """Wait for the Data Docs pages the gate process builds after a gate's verdict.

    A page that could not be built is a warning, not a failure: the verdict was given and the
    results are stored (``_quality/results``); the job's tables may already be published."""
    while _DOCS:
        try:
            _DOCS.pop(0).result()
        except Exception as exc:  # noqa: BLE001 - any failure of the pages' build: said, not raised
            LOG.warning("the Data Docs pages of a gate were not built: %s", exc)


def _run_here(
    lake_root: str, layer: str, key: str, batches: list, parameters, overrides, defer_docs: bool = False
) -> GateResult:
    from quality.runner import run_suites as run

    try:
        return run(lake_root, layer, key, batches, parameters=parameters, overrides=overrides, defer_docs=defer_docs)
    finally:
        del batches
        _give_memory_back()


def _build_docs(lake_root: str) -> None:
    from quality.runner import build_pending_docs

    build_pending_docs(lake_root)


def _give_memory_back() -> None:
    """Hand the batch's dataframes back to the system once the gate is done: the gate process outlives
    the call (the job's MERGE runs next), and the allocator kept 2.2 GB of a 5M-event hour's pandas
    copy mapped in it otherwise (measured), on top of the MERGE's own peak."""
    import ctypes  # noqa: PLC0415 - only here
    import gc  # noqa: PLC0415 - only here

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, not returned
        pass


def run_suites(
    lake_root: str,
    layer: str,
    key: str,
    batches: list,
    parameters: Optional[dict] = None,
    overrides: Optional[dict] = None,
) -> GateResult:
    """``quality.runner.run_suites``, in the gate process when one was started."""
    if _POOL.executor is None:
        return _run_here(lake_root, layer, key, batches, parameters, overrides)
    # Arrow tables pickle as their buffers: sending a batch costs a copy, not a conversion, of the
    # columns its rules read (``Batch.slim``).
    slim = [b.slim() for b in batches]
    # The verdict first: the Data Docs pages (0.5 s for a Gold day) are built next, in the gate
    # process, while the job commits; the job waits for them at its end (``gate_process``).
    result = _POOL.submit(_run_here, lake_root, layer, key, slim, parameters, overrides, True).result()
    _DOCS.append(_POOL.submit(_build_docs, lake_root))
    return result
