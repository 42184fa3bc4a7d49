"""Running the batch pipelines (Silver, Gold): options, errors, counters.

Locally the pipelines run on FnApiRunner in memory; any other ``--runner``
(Flink, Dataflow...) gets the same pipeline. A ``LakeError`` raised inside
a transform (a corrupt file, a failed gate) comes back to the caller as the
same error with its own message, not as a Beam traceback.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Iterator, Sequence

from apache_beam import Pipeline
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import runner_fixes  # noqa: F401 - the local runner's metrics past 900 bundles
from lake_core.errors import LakeError

__all__ = ["pipeline_options", "run_pipeline"]

#: Loggers through which Beam reports a failing DoFn with its traceback.
_BEAM_ERROR_LOGGERS = (
    "apache_beam.runners.common",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.portability.fn_api_runner",
)
_WHILE_RUNNING = re.compile(r"\s*\[while running '[^']*'\]")


def pipeline_options(runner: str, local: bool, beam_args: Sequence[str]) -> PipelineOptions:
    args = [f"--runner={runner}", *beam_args]
    if local:
        args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    return PipelineOptions(args)


@contextmanager
def _quiet_beam_errors() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in _BEAM_ERROR_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def run_pipeline(pipeline: Pipeline, namespace: str) -> dict:
    """Run ``pipeline`` to the end; return its counters of ``namespace`` by name."""
    try:
        with _quiet_beam_errors():
            result = pipeline.run()
            result.wait_until_finish()
    except LakeError as exc:
        # FnApiRunner re-raises the transform's exception with "[while running ...]" appended.
        raise type(exc)(_WHILE_RUNNING.sub("", str(exc))) from None
    counters: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == namespace:
            value = c.committed if c.committed is not None else c.attempted
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(value or 0)
    return counters
