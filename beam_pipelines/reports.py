"""A batch job's outcome as one JSON file, for a launcher in another process.

The hourly and daily DAGs start the Silver and Gold jobs as subprocesses
(through Airflow's Beam provider), so the job's return value never reaches
them. With ``--report-json PATH`` a job writes, when it ends:

- on success: ``{"job", "ok": true, "summary", ...the report's fields}``
  (for Silver: ``hour``, ``complete``, ``files``, ``counters``);
- on a refusal (a ``LakeError``: a failed gate, no such hour, a corrupt
  file): ``{"job", "ok": false, "error": "QualityGateFailed", "exit_code",
  "message"}``, so the launcher fails with the job's own words rather than
  a return code.

A job that crashes otherwise writes nothing; ``read_report`` then says so.
The file appears whole or not at all (written aside, then renamed).

``script_main`` is the jobs' ``python -m`` entry: the summary on stdout, or
a refusal as one line on stderr and its exit code (5 for a failed gate),
not a traceback, in the launcher's log.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

from beam_pipelines.job_metrics import push_job_metrics
from lake_core import errors
from lake_core.errors import LakeError

__all__ = ["writes_json_report", "read_report", "script_main", "report_fields", "quarantine_counts"]

QUARANTINED_PREFIX = "quarantined_"


def report_fields(report: type, counters: dict[str, int]) -> dict[str, int]:
    """The counters that are integer fields of the dataclass ``report``, by name."""
    names = {f.name for f in dataclasses.fields(report) if f.type in ("int", int)}
    return {name: int(value) for name, value in counters.items() if name in names}


def quarantine_counts(counters: dict[str, int]) -> dict[str, int]:
    """``quarantined_<reason>`` counters as ``{reason: rows}``, the reasons that occurred."""
    return {
        k.removeprefix(QUARANTINED_PREFIX): int(v)
        for k, v in counters.items()
        if k.startswith(QUARANTINED_PREFIX) and v
    }


def _write(path: str, body: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w") as out:
        json.dump(body, out, indent=1, sort_keys=True, default=str)
    os.replace(partial, path)


def writes_json_report(job: str) -> Callable:
    """Decorate ``run_x(opts, ...)``: when ``opts.report_json`` is set, write the outcome there; with a
    Pushgateway (``LAKE_PUSHGATEWAY_URL``), push it there too (``job_metrics``)."""

    def decorate(run: Callable) -> Callable:
        @functools.wraps(run)
        def run_and_report(opts: Any, *args: Any, **kwargs: Any) -> Any:
            path = getattr(opts, "report_json", None)
            started = time.monotonic()
            try:
                report = run(opts, *args, **kwargs)
            except LakeError as exc:
                push_job_metrics(job, time.monotonic() - started, error=exc)
                if not path:
                    raise
                _write(
                    path,
                    {
                        "job": job,
                        "ok": False,
                        "error": type(exc).__name__,
                        "exit_code": exc.exit_code,
                        "message": str(exc),
                    },
                )
                raise
            push_job_metrics(job, time.monotonic() - started, report)
            if path:
                _write(path, {"job": job, "ok": True, "summary": report.summary(), **dataclasses.asdict(report)})
            return report

        return run_and_report

    return decorate


def read_report(path: str, job_output: Optional[str] = None) -> dict:
    """The report a job wrote to ``path``; re-raise the ``LakeError`` it recorded.

    ``job_output`` (the job's last log lines) goes into the error raised when
    the job wrote no report at all.
    """
    try:
        with open(path) as f:
            body = json.load(f)
    except FileNotFoundError:
        tail = f"; its last output:\n{job_output}" if job_output else ""
        raise LakeError(f"the job wrote no report to {path}: it crashed before finishing{tail}") from None
    if not body.get("ok"):
        error = getattr(errors, str(body.get("error")), None)
        if not (isinstance(error, type) and issubclass(error, LakeError)):
            error = LakeError
        raise error(body.get("message") or f"the {body.get('job')} job failed without a message")
    return body


def script_main(run: Callable, argv: Sequence[str]) -> int:
    """Run a job's ``run(argv)``; print its summary, or its ``LakeError`` as one line; return the exit code."""
    try:
        print(run(argv).summary())
    except LakeError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
