"""Run ``lake ingest`` on Flink so that exactly one ingest pipeline reads the topic.

    python docker/ingest_supervisor.py --flink-rest=http://flink-jobmanager:8081 -- \\
        lake ingest --follow --runner=PortableRunner --job_name=lake-ingest ...

On Flink the ingest driver only submits the streaming pipeline and waits on
it; the pipeline itself lives in the Flink cluster. Two things follow, and
this wrapper handles both through Flink's REST API:

- A driver killed hard (OOM, ``docker kill``, a host reboot) leaves its job
  running. A new driver would submit a second job reading the same
  partitions, and Bronze would get every record twice. So before starting,
  every live job with the command's ``--job_name`` is cancelled.
- Stopping the driver does not stop the job. So on SIGTERM or SIGINT (what
  ``docker compose stop`` sends) the job is cancelled first, then the driver
  is waited for. What the job had buffered but not written is read again on
  the next start: Bronze is the ingest's checkpoint.

Only the standard library: the wrapper must work in any image that has the
lake installed.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Optional, Sequence

#: Flink job states after which the job reads nothing more.
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})


def job_name_of(command: Sequence[str]) -> str:
    """The ``--job_name`` a command passes to Beam; the Flink job gets that name."""
    for i, arg in enumerate(command):
        if arg.startswith("--job_name="):
            return arg.split("=", 1)[1]
        if arg == "--job_name" and i + 1 < len(command):
            return command[i + 1]
    raise ValueError(
        "the ingest command must name its Flink job with --job_name=NAME: "
        "that name is how a restarted driver finds the job it replaces"
    )


def live_jobs(overview: dict, name: str) -> list:
    """Ids of the jobs called ``name`` in a ``GET /jobs/overview`` answer that are not over."""
    return [
        job["jid"]
        for job in overview.get("jobs", [])
        if job.get("name") == name and job.get("state") not in TERMINAL_STATES
    ]


def _request(url: str, method: str = "GET", timeout: float = 10.0) -> dict:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else {}


def cancel_jobs(rest: str, name: str, wait_s: float = 60.0) -> list:
    """Cancel every live job called ``name``; wait until none is live. Returns the ids cancelled."""
    rest = rest.rstrip("/")
    ids = live_jobs(_request(f"{rest}/jobs/overview"), name)
    for jid in ids:
        _request(f"{rest}/jobs/{jid}?mode=cancel", method="PATCH")
    deadline = time.monotonic() + wait_s
    while ids and live_jobs(_request(f"{rest}/jobs/overview"), name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Flink job(s) {', '.join(ids)} still running {wait_s:g} s after cancel")
        time.sleep(0.5)
    return ids


def wait_for_rest(rest: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _request(f"{rest.rstrip('/')}/overview", timeout=5)
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _log(message: str) -> None:
    print(f"ingest-supervisor: {message}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        _log("usage: ingest_supervisor.py --flink-rest=URL -- COMMAND...")
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="ingest_supervisor.py")
    parser.add_argument("--flink-rest", required=True, help="Flink's REST address, e.g. http://flink-jobmanager:8081")
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds the driver gets to exit once its job is cancelled (default 30)",
    )
    parser.add_argument(
        "--rest-timeout", type=float, default=120.0, help="seconds to wait for Flink's REST API at start (default 120)"
    )
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    try:
        name = job_name_of(command)
    except ValueError as exc:
        _log(str(exc))
        return 2

    wait_for_rest(args.flink_rest, args.rest_timeout)
    stale = cancel_jobs(args.flink_rest, name)
    if stale:
        _log(f"cancelled {len(stale)} job(s) named {name!r} left by an earlier driver: {', '.join(stale)}")

    child = subprocess.Popen(command)
    stop_signal: list = []  # the handler only records; the loop below acts, outside signal context
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop_signal.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stop_signal.append(signum))
    kill_at = None
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop_signal and kill_at is None:
            _log(f"{signal.Signals(stop_signal[0]).name}: cancelling Flink job {name!r}")
            try:
                cancel_jobs(args.flink_rest, name)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                _log(f"could not cancel the Flink job ({exc}); cancel it in Flink's UI")
            kill_at = time.monotonic() + args.stop_timeout
        elif kill_at is not None and time.monotonic() > kill_at:
            child.kill()
    # The driver fails once its job is cancelled: that was asked for.
    return 0 if stop_signal else code


if __name__ == "__main__":
    sys.exit(main())
