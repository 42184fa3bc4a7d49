"""The production path, run here: Silver, Gold and a bounded ingest submitted through Beam's
portable job API and executed by SDK workers in other processes, as on Flink.

Beam's own Python job service (``local_job_service_main``) and an external worker pool
(``worker_pool_main``, what the compose stack's ``beam-worker-pool`` runs) start as subprocesses
on free ports, in a directory of their own; the jobs are submitted with
``--runner=PortableRunner --job_endpoint=... --environment_type=EXTERNAL --environment_config=...``
through the CLI (ingest, Silver) and through the DAGs' launcher (Gold, ``lake.orchestration``).
So every DoFn, coder and gate is pickled, shipped and run in a worker process that shares
nothing with the launcher but the lake's files and Kafka.

One fleet is simulated into the broker; two lakes get the same registry and are fed from the same
topic, one on the local runner (FnApiRunner), one through the job service. Everything each
writes must be the same, row for row: Bronze and its rejects, Silver and its quarantine, the
ledger, the three Gold tables. The local-only helper processes (the ingest's validators, the
gate's process) run with the local runner only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from deltalake import DeltaTable

from lake.cli import main
from lake_core import kafka_admin
from lake_core.processes import HelperPool, free_port
from lake_core.settings import Settings
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from support import lake_scenario
from support.ingest_helpers import T0, assert_groups_whole_and_contiguous, markers, produce, rows_by_offset, snapshot

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
HOUR, DAY = "2026-03-01T08", "2026-03-01"
PARTITIONS = 4
JOB_SERVICE = "apache_beam.runners.portability.local_job_service_main"
WORKER_POOL = "apache_beam.runners.worker.worker_pool_main"
_SPEED = re.compile(r", [\d,]+ records/s|in \d+ pass\(es\)")
#: Modules the local-only helper processes import: the ingest's validators, the quality gate's process.
VALIDATORS, GATE = "beam_pipelines.ingest.batches", "quality.runner"


@dataclass
class JobService:
    job_port: int
    pool_port: int
    logs: Path

    @property
    def beam_args(self) -> list[str]:
        return [
            f"--job_endpoint=localhost:{self.job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{self.pool_port}",
        ]

    @property
    def beam_options(self) -> dict:
        """The same, as the DAGs' ``lake_beam_options`` (a JSON object)."""
        return dict(a.removeprefix("--").split("=", 1) for a in self.beam_args)

    def log(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.logs.glob("*.log")))


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout} s: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """The process and the SDK workers it started (its own session: ``start_new_session``)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def job_service(tmp_path_factory):
    """Beam's job service and an external SDK worker pool, in a directory that is not the tests'."""
    workdir = tmp_path_factory.mktemp("beam-job-service")
    # The pool starts each job's SDK worker as `python` from PATH: this interpreter's.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    service = JobService(free_port(), free_port(), workdir)
    procs = []
    try:
        for name, argv, port in (
            ("job-service", [JOB_SERVICE, f"--port={service.job_port}"], service.job_port),
            ("worker-pool", [WORKER_POOL, f"--service_port={service.pool_port}"], service.pool_port),
        ):
            log = workdir / f"{name}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", *argv],
                    cwd=workdir,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append(proc)
            _wait_listening(port, proc, log)
        yield service
    finally:
        for proc in reversed(procs):
            _stop(proc)


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float
    helpers: list = field(default_factory=list)  # warm modules of the helper processes it started


@contextlib.contextmanager
def _recording_helper_starts():
    started: list = []
    original = HelperPool.start

    def start(self, processes: int) -> None:
        if processes > 0 and self.executor is None:
            started.append(self._warm[0])
        original(self, processes)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HelperPool, "start", start)
        yield started


def _lake(*argv: str) -> Run:
    """``lake <argv>`` in this process, its output captured; SIGINT/SIGTERM handlers restored after
    (``lake ingest`` installs its own)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    try:
        with _recording_helper_starts() as helpers, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return Run(code, out.getvalue(), err.getvalue(), time.monotonic() - started, helpers)


def _gold_through_the_dags_launcher(root: str, service: JobService) -> Run:
    """What the daily DAG's task does: ``python -m beam_pipelines.gold.pipeline`` through Airflow's Beam
    hook, with the runner and Beam options of the Airflow Variables (``lake_beam_runner``, ``lake_beam_options``)."""
    from lake.orchestration.beam_jobs import run_job
    from lake.orchestration.config import JobConfig

    started = time.monotonic()
    report = run_job("gold", {"date": DAY}, JobConfig(root, runner="PortableRunner", beam_options=service.beam_options))
    return Run(0, report["summary"] + "\n", "", time.monotonic() - started)


@pytest.fixture(scope="module")
def lakes(job_service, kafka_bootstrap, tmp_path_factory):
    """Both lakes after: simulate -> ingest --until-idle -> silver --hour -> gold --date."""
    base = tmp_path_factory.mktemp("portable")
    topic = f"t-portable-{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic, f"{topic}-dlq"], partitions=PARTITIONS)
    local, portable = str(base / "local"), str(base / "portable")
    runs: dict = {}

    def common(root: str) -> list[str]:
        return ["--lake-root", root, "--bootstrap", kafka_bootstrap, "--topic", topic]

    # A few thousand messages of both shapes, with bad messages (rejects), duplicates, GPS glitches
    # (quarantine) and a skewed clock; the registry (dims/vehicles) written to the local lake, copied.
    runs["simulate"] = _lake(
        "simulate",
        *common(local),
        *("--vehicles", "10", "--duration", "10m", "--rate", "0.5", "--shape", "mixed", "--seed", "42"),
        *("--bad-rate", "0.02", "--duplicate-rate", "0.01", "--gps-glitch-rate", "0.01", "--no-progress"),
    )
    assert runs["simulate"].code == 0, runs["simulate"].err
    shutil.copytree(f"{local}/dims", f"{portable}/dims")
    remote = ["--runner=PortableRunner", *job_service.beam_args]
    ingest = ("ingest", "--until-idle", "2", "--close-open-hours")
    for name, root, extra in (("local", local, []), ("portable", portable, remote)):
        runs[f"ingest {name}"] = _lake(*ingest, *common(root), *extra)
        runs[f"silver {name}"] = _lake("silver", "--hour", HOUR, *common(root), *extra)
        if name == "local":
            runs[f"gold {name}"] = _lake("gold", "--date", DAY, *common(root))
        else:
            runs[f"gold {name}"] = _gold_through_the_dags_launcher(root, job_service)
        for step in ("ingest", "silver", "gold"):
            run = runs[f"{step} {name}"]
            assert run.code == 0, f"{step} on {name}: {run.err}\n{job_service.log()}"
    for name, run in runs.items():
        print(f"{name}: {run.seconds:.1f} s", flush=True)
    return SimpleNamespace(
        local=Settings(lake_root=local, bootstrap=kafka_bootstrap, topic=topic, dlq_topic=f"{topic}-dlq"),
        portable=Settings(lake_root=portable, bootstrap=kafka_bootstrap, topic=topic, dlq_topic=f"{topic}-dlq"),
        runs=runs,
    )


def _bronze(settings: Settings, table: str) -> list:
    rows = rows_by_offset(settings, table)
    for row in rows.values():
        row["file"] = os.path.relpath(row["file"], settings.lake_root)
    return [rows[k] for k in sorted(rows)]


def _table(root: str, name: str, drop: tuple = ()) -> list:
    """Every row of the Delta table ``name``, without the columns ``drop``, in one order whatever the writer's."""
    table = delta_dataset(LakePaths(root).table(name)).to_table()
    rows = table.drop_columns(list(drop)).to_pylist()
    return sorted(rows, key=repr)


# -- the bounded ingest -------------------------------------------------------------------------------------------


def test_ingest_through_the_job_service_writes_the_same_bronze_and_rejects(lakes):
    local, portable = lakes.local, lakes.portable
    bronze, rejects = _bronze(local, "bronze"), _bronze(local, "rejects")
    assert len(bronze) > 3000 and len(rejects) > 20, (len(bronze), len(rejects))
    assert {r["reason"] for r in rejects} >= {"not_json"}
    assert _bronze(portable, "bronze") == bronze
    assert _bronze(portable, "rejects") == rejects
    # the same groups of files, every one whole, and the hour closed the same way (it drained)
    held = bronze + rejects
    ends = {p: max(r["kafka_offset"] for r in held if r["kafka_partition"] == p) for p in range(PARTITIONS)}
    assert_groups_whole_and_contiguous(portable, ends)

    def closed(settings):
        return {h: {k: v for k, v in m.items() if k != "completed_at"} for h, m in markers(settings).items()}

    assert closed(portable) == closed(local) and len(closed(local)) == 1
    assert next(iter(closed(portable).values()))["completed_by"] == "drained"


def test_a_bounded_ingest_on_a_remote_runner_knows_why_each_partition_ended(lakes):
    """The readers run in the SDK worker: why each partition ended reaches the driver as counters, so one
    pass that read the topic to idleness is seen as drained (no second, empty pass to wait through)."""
    local, portable = lakes.runs["ingest local"], lakes.runs["ingest portable"]
    assert "in 1 pass(es)" in portable.out, portable.out
    # "ingested N records in 1 pass(es): N bronze, N rejects, N files": the counters of the job service's metrics
    assert _SPEED.sub("", portable.out) == _SPEED.sub("", local.out)
    passes = [line for line in portable.err.splitlines() if line.startswith("pass ")]
    assert len(passes) == 1 and "(ended by idle)" in passes[0], portable.err


def test_the_local_only_helper_processes_start_with_the_local_runner_only(lakes):
    runs = lakes.runs
    assert VALIDATORS in runs["ingest local"].helpers  # the test can tell: the local run starts them
    assert GATE in runs["silver local"].helpers and GATE in runs["gold local"].helpers
    for step in ("ingest portable", "silver portable"):
        assert runs[step].helpers == [], f"{step} started {runs[step].helpers} on a remote runner"


# -- Silver and Gold --------------------------------------------------------------------------------------------


def test_silver_through_the_job_service_writes_the_same_tables(lakes):
    local, portable = lakes.local.lake_root, lakes.portable.lake_root
    silver, quarantine = _table(local, "silver_telemetry"), _table(local, "silver_quarantine")
    assert len(silver) > 2500 and len(quarantine) > 0, (len(silver), len(quarantine))
    assert {r["source_shape"] for r in silver} == {"snapshot", "signal"}
    assert _table(portable, "silver_telemetry") == silver
    assert _table(portable, "silver_quarantine") == quarantine
    # the job's counters, read back from the job service's metrics, say the same
    assert lakes.runs["silver portable"].out == lakes.runs["silver local"].out
    assert "duplicates" in lakes.runs["silver portable"].out


def test_gold_through_the_dags_launcher_and_the_job_service_writes_the_same_tables(lakes):
    local, portable = lakes.local.lake_root, lakes.portable.lake_root
    for name in ("gold_vehicle_hourly", "gold_zone_hourly", "gold_vehicle_state"):
        rows = _table(local, name)
        assert rows, name
        assert _table(portable, name) == rows, name
    assert len(_table(local, "gold_vehicle_state")) == 10  # every simulated vehicle
    assert lakes.runs["gold portable"].out == lakes.runs["gold local"].out


def test_the_ledger_balances_the_same_on_both(lakes):
    """Written by the commit steps, in the SDK workers on the remote runner."""
    stamps = ("silver_published_at", "gold_published_at")
    local = _table(lakes.local.lake_root, "ledger_hours", drop=stamps)
    assert len(local) == PARTITIONS and all(r["silver_new"] and r["gold_event_count"] for r in local), local
    assert _table(lakes.portable.lake_root, "ledger_hours", drop=stamps) == local
    for settings in (lakes.local, lakes.portable):
        run = _lake("ledger", "--date", DAY, "--lake-root", settings.lake_root)
        assert run.code == 0, run.out + run.err


# -- a failure in a worker ---------------------------------------------------------------------------------------


def test_a_gate_failing_in_a_worker_exits_5_naming_its_expectation(job_service, tmp_path, caplog):
    """The worker's QualityGateFailed reaches the launcher as the job service's text: the CLI still
    exits 5 with the gate's own one-line message, not a traceback, and publishes nothing."""
    root = str(tmp_path / "lake")
    lake_scenario.build(root)  # hour 08 quarantines 24% of its rows: over the gate's 10%
    remote = ["--runner=PortableRunner", *job_service.beam_args]
    with caplog.at_level(logging.ERROR):
        run = _lake("silver", "--hour", lake_scenario.H08, "--lake-root", root, *remote)
    assert run.code == 5, run.err
    last = run.err.strip().splitlines()[-1]
    assert last.startswith(
        "lake: error: silver batch 2026-03-01T08 failed its quality gate (nothing was published): "
        "silver_quarantine_rate"
    ), run.err
    assert not DeltaTable.is_deltatable(LakePaths(root).table("silver_telemetry"))
    assert not [r for r in caplog.records if "Traceback" in r.getMessage()], "the worker's traceback was logged"


def test_an_undelivered_dlq_in_a_worker_fails_the_pass_and_it_is_retried(job_service, settings, monkeypatch):
    """``DeadLetterUndelivered`` raised in the SDK worker comes back to the driver as itself: the pass is
    run again (then the ingest exits 3), and nothing the DLQ did not confirm is committed."""
    from beam_pipelines.ingest import pipeline

    monkeypatch.setattr(pipeline, "PASS_RETRY_DELAYS_S", (0.1,))
    monkeypatch.setenv("LAKE_DLQ_TOPIC", "no such topic!")  # an illegal name: every delivery fails
    good, bad = produce(settings, [(b"V1", snapshot("V1", T0), T0, 0), (b"V2", b"{bad", T0, 1)])
    run = _lake(
        *("ingest", "--until-idle", "1", "--no-progress"),
        *("--lake-root", settings.lake_root, "--bootstrap", settings.bootstrap, "--topic", settings.topic),
        *("--runner=PortableRunner", *job_service.beam_args),
    )
    assert run.code == 3, run.err
    assert run.err.count("retrying") == 1 and "DLQ topic no such topic!" in run.err.splitlines()[-1], run.err
    assert rows_by_offset(settings, "rejects") == {}  # the reject was not committed without its DLQ copy
    assert set(rows_by_offset(settings, "bronze")) == {good}  # the other partition's group was


# -- how a bounded run is built for a remote runner ------------------------------------------------------------------


def test_a_bounded_run_on_a_remote_runner_is_a_batch_pipeline_and_an_unbounded_one_streams():
    from apache_beam.options.pipeline_options import StandardOptions

    from beam_pipelines.ingest.options import IngestOptions
    from beam_pipelines.ingest.pipeline import beam_options
    from lake_core.errors import ConfigError

    def opts(**kw):
        return IngestOptions("/tmp/never-written", "kafka:9092", "t", "t-dlq", runner="PortableRunner", **kw)

    bounded, unbounded = opts(until_idle=2.0), opts(follow=True)
    assert not bounded.unbounded and unbounded.unbounded
    assert not beam_options(bounded, []).view_as(StandardOptions).streaming
    assert beam_options(unbounded, []).view_as(StandardOptions).streaming
    assert bounded.helper_processes == 0  # validators are the local runner's: a worker validates itself
    with pytest.raises(ConfigError, match="--until-idle needs the native source"):
        opts(until_idle=2.0, kafka_source="xlang")
