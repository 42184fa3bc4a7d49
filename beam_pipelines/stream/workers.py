"""``lake stream --workers N`` on the local runner: N processes, each streaming its share of the partitions.

The rules are Python, one event at a time: one process uses one core. What
Flink's parallelism does for the same DoFns, done locally: worker ``I`` of
``N`` (``python -m beam_pipelines.stream.worker_main ... --worker I/N``) streams
the partitions ``p`` with ``p mod N = I``, with its own passes, saved states
and commits. A partition's state and its offsets live in one process, so
exactly once holds per partition as it does with one process (each worker
holds a lock per partition; this process holds the topic's, so a second
``lake stream`` is refused as before). This process sends the alert outbox
(one publisher: one ordered alerts topic) and reports the workers' passes.

The workers run in a session of their own: a Ctrl-C reaches this process
only, which asks each worker once to stop after its pass in flight; a
second Ctrl-C asks again (they abort). A worker whose parent is gone exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from typing import Any, Sequence

from beam_pipelines.stream.options import StreamOptions
from beam_pipelines.stream.publisher import AlertPublisher
from beam_pipelines.stream.report import StreamPass, StreamReport
from beam_pipelines.stream.store import hold_stream_lock, prepare_store
from lake_core.errors import LakeError
from lake_core.kafka_admin import partition_count, wait_until_reachable
from lake_core.processes import init_helper

__all__ = ["stream_with_workers", "run_workers", "worker_argv", "report_pass", "worker_started", "split_parent"]

#: A worker's stdout line that carries one of its passes, as JSON.
PASS_LINE = "lake-stream-pass "
#: The first flag of a worker's command: the pid of the process that started it.
PARENT_FLAG = "--parent-pid"


def worker_argv(opts: StreamOptions, beam_args: Sequence[str], index: int, count: int) -> list:
    """The command of worker ``index`` of ``count``; the DSN, broker and topic go in its environment."""
    argv = [sys.executable, "-m", "beam_pipelines.stream.worker_main", PARENT_FLAG, str(os.getpid())]
    argv += ["--worker", f"{index}/{count}"]
    if opts.until_idle is not None:
        argv += ["--until-idle", repr(opts.until_idle)]
    if opts.max_seconds is not None:
        argv += ["--max-seconds", repr(opts.max_seconds)]
    argv += [
        "--pass-seconds", repr(opts.pass_seconds),
        "--commit-seconds", repr(opts.commit_seconds),
        "--snapshot-seconds", repr(opts.snapshot_seconds),
        "--hot-days", str(opts.hot_days),
        "--alerts-topic", opts.alerts_topic,
        "--poll-batch", str(opts.poll_batch),
        "--runner", opts.runner,
    ]  # fmt: skip
    if opts.geofence is not None:
        argv += ["--geofence", opts.geofence]
    if not opts.progress:
        argv.append("--no-progress")
    return [*argv, *beam_args]


def _worker_env(opts: StreamOptions) -> dict:
    # Not on the command line: a DSN may hold a password, and argv is public (ps).
    return {
        **os.environ,
        "LAKE_HOT_DSN": opts.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": opts.bootstrap,
        "LAKE_TOPIC": opts.topic,
    }


def stream_with_workers(
    opts: StreamOptions, beam_args: Sequence[str] = (), progress: Any = None, stop: Any = None
) -> StreamReport:
    """``run_stream`` with ``opts.workers`` processes; this process never imports Beam (the workers start
    sooner: each imports it on its own core)."""
    wait_until_reachable(opts.bootstrap, timeout=10)
    return run_workers(opts, beam_args, partition_count(opts.bootstrap, opts.topic), progress, stop)


def run_workers(
    opts: StreamOptions, beam_args: Sequence[str], partitions: int, progress: Any, stop: Any
) -> StreamReport:
    """Start ``opts.workers`` workers, send their alerts, report their passes; a ``StreamReport``."""
    count = min(opts.workers, partitions)
    prepare_store(opts.dsn, opts.topic, partitions)
    lock = hold_stream_lock(opts.dsn, opts.topic)
    stop = stop or threading.Event()
    report = StreamReport()
    done = threading.Lock()
    publisher = AlertPublisher(opts.dsn, opts.bootstrap, opts.alerts_topic, opts.webhook).start()
    procs: list = []
    try:
        for index in range(count):
            procs.append(
                subprocess.Popen(
                    worker_argv(opts, beam_args, index, count),
                    env=_worker_env(opts),
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # Ctrl-C in a terminal reaches this process only
                )
            )

        def follow(proc: subprocess.Popen) -> None:
            assert proc.stdout is not None  # stdout=PIPE
            for line in proc.stdout:
                if not line.startswith(PASS_LINE):
                    sys.stdout.write(line)
                    continue
                one = StreamPass(**json.loads(line[len(PASS_LINE) :]))
                one.ended_by = {int(k): v for k, v in one.ended_by.items()}
                with done:
                    report.passes.append(one)
                    if progress is not None:
                        progress(len(report.passes), one)

        readers = [threading.Thread(target=follow, args=(p,), daemon=True) for p in procs]
        for reader in readers:
            reader.start()
        asked = False
        while any([p.poll() is None for p in procs]):  # a list: every worker polled, each round
            # A worker that failed leaves its partitions unstreamed: the others stop too, and the run fails.
            failed_one = any(p.returncode not in (None, 0) for p in procs)
            if (stop.is_set() or failed_one) and not asked:
                _ask_to_stop(procs)
                asked = True
            time.sleep(0.2)
        for reader in readers:
            reader.join(timeout=5)
    except KeyboardInterrupt:
        _ask_to_stop(procs)  # the second Ctrl-C: their second one too (they abort)
        raise
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        publisher.stop(drain=True)
        report.published = publisher.published
        report.webhook_posted = publisher.webhook_posted
        lock.close()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise LakeError(
            "lake stream worker(s) failed: "
            + ", ".join(f"{i}/{count} exit {code}" for i, code in failed)
            + " (their partitions resume from their last commit on the next start)"
        )
    return report


def _ask_to_stop(procs: list) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)


# -- in a worker ---------------------------------------------------------------------------------------


def split_parent(argv: list) -> tuple:
    """``(parent pid, the rest)`` of a worker's command line (``worker_argv``)."""
    if len(argv) < 2 or argv[0] != PARENT_FLAG or not argv[1].isdigit():
        raise SystemExit(f"a stream worker's command starts with {PARENT_FLAG} PID (see worker_argv)")
    return int(argv[1]), argv[2:]


def worker_started(parent: int) -> None:
    """A worker exits when ``parent``, the process that started it, is gone (killed: its commits stand,
    the next start resumes them), also when it went before the worker got here."""
    init_helper(parent=parent)


def report_pass(number: int, one: Any) -> None:
    """A worker's pass, to the process that started it: one stdout line."""
    fields = asdict(one)
    fields["ended_by"] = {str(k): v for k, v in one.ended_by.items()}
    print(PASS_LINE + json.dumps(fields), flush=True)
