"""The Silver and Gold jobs, run through Airflow's Beam provider.

Each job is ``python -m beam_pipelines.<job>.pipeline`` started by
``BeamHook.start_python_pipeline`` with the runner and the Beam options of
``config.JobConfig``: FnApiRunner in the worker by default; FlinkRunner or
DataflowRunner (plus their options) by Airflow Variables, with no code
change. The hook streams the job's output into the task log.

Why the hook and not ``BeamRunPythonPipelineOperator``: provider 6.3.1's
operator refuses to build, even for a local runner, without
``apache-airflow-providers-google`` (about 90 more packages), while the
hook needs nothing more. Dataflow stays reachable: ``DataflowRunner`` is
Beam's own (``apache-beam[gcp]`` is a worker requirement), and the launcher
waits for the job to finish, so the task's outcome is the job's. What the
operator would add on Dataflow (job links, cancelling the job when the task
is killed) needs that provider.

The job writes its outcome to ``--report-json`` (``beam_pipelines.reports``):
the task returns the report, or fails with the job's own error (a failed
gate names its failed expectations) rather than with a return code.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import tempfile
from contextlib import contextmanager

from beam_pipelines.reports import read_report
from lake.orchestration.config import JobConfig

__all__ = ["run_job"]

LOG = logging.getLogger(__name__)
JOBS = {"silver": "beam_pipelines.silver.pipeline", "gold": "beam_pipelines.gold.pipeline"}
_OUTPUT_LINES_KEPT = 30


@contextmanager
def _lake_root_in_environment(lake_root: str):
    """The jobs find the lake as every ``lake`` command does: ``LAKE_ROOT``."""
    before = os.environ.get("LAKE_ROOT")
    os.environ["LAKE_ROOT"] = lake_root
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LAKE_ROOT", None)
        else:
            os.environ["LAKE_ROOT"] = before


@contextmanager
def _job_stops_with_the_task():
    """Stop the job's process when the task is interrupted (a timeout, a kill).

    The hook waits for its subprocess without ever stopping it: without this,
    a task that timed out would leave the job running, and committing, behind
    the retry.
    """
    import psutil

    before = {c.pid for c in psutil.Process().children(recursive=True)}  # not ours to stop
    try:
        yield
    except BaseException:
        children = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
        for child in children:
            child.terminate()
        _, alive = psutil.wait_procs(children, timeout=20)
        for child in alive:
            child.kill()
        raise


def run_job(job: str, flags: dict, config: JobConfig) -> dict:
    """Run ``job`` (``silver`` or ``gold``) with ``flags`` (its own, e.g. ``{"hour": ...}``); return its report.

    Raises the job's ``LakeError`` when it refused or failed (``QualityGateFailed``
    for a failed gate, ``LakeDataError`` for missing or corrupt input).
    """
    from airflow.providers.apache.beam.hooks.beam import BeamHook

    output = collections.deque(maxlen=_OUTPUT_LINES_KEPT)
    with tempfile.TemporaryDirectory(prefix=f"lake-{job}-") as tmp:
        report_path = os.path.join(tmp, "report.json")
        # Beam options first: the job's own flags win over a stray option of the same name.
        variables = {**config.beam_options, **flags, "report-json": report_path}
        failure = None
        with _lake_root_in_environment(config.lake_root), _job_stops_with_the_task():
            try:
                BeamHook(runner=config.runner).start_python_pipeline(
                    variables=variables,
                    py_file=JOBS[job],
                    py_options=["-m"],
                    py_interpreter=sys.executable,
                    process_line_callback=output.append,
                )
            except Exception as exc:  # noqa: BLE001 -- the report below says what happened
                failure = exc
        report = read_report(report_path, job_output="".join(output).rstrip() or None)
        if failure is not None:
            # A report that says "ok" was written after the commit: what failed came after (the interpreter's exit).
            LOG.warning("the %s job reported success but its process then failed: %s", job, failure)
        return report
