"""Validation in helper processes (local runner): same verdicts, nothing lost when a helper dies."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import psutil
import pytest

from beam_pipelines.ingest import validation_processes as vp
from beam_pipelines.ingest.batches import KafkaBatch, validate_batch
from beam_pipelines.ingest.options import IngestOptions
from lake_core import kafka_admin
from lake_core.errors import ConfigError
from lake_core.settings import Settings
from support.ingest_helpers import T0, files, ingest, offsets_held, produce, rows_by_offset, snapshot
from support.ingest_helpers import signal as signal_message


def _batch() -> KafkaBatch:
    values = [snapshot("V001", T0 + i) for i in range(200)] + [
        b"not json",
        b"",
        None,
        b"[1]",
        signal_message("V002", T0, name="tyre"),
        b"\xff\xfe{}",
        snapshot("V9", T0, ts="2026-03-01T08:00:00"),
        signal_message("V002", T0 + 5, name="soc"),
    ]
    n = len(values)
    return KafkaBatch(
        "vehicle-telemetry",
        3,
        list(range(100, 100 + n)),
        [T0 + 10 * i for i in range(n)],
        [b"V001"] * (n - 1) + [None],
        values,
    )


def _same(a, b) -> None:
    assert (a.partition, a.first_offset, a.last_offset) == (b.partition, b.first_offset, b.last_offset)
    assert a.bronze.equals(b.bronze) and a.rejects.equals(b.rejects)
    assert [(v, r.reason, o, k) for v, r, o, k in a.dlq_values] == [(v, r.reason, o, k) for v, r, o, k in b.dlq_values]


@pytest.fixture
def helpers():
    vp.start(1)
    yield
    vp.stop()


def test_a_helper_process_gives_the_verdicts_the_runner_would(helpers):
    batch = _batch()
    here = validate_batch(batch)
    assert here.rejects.num_rows == 7 and here.bronze.num_rows == 201  # the test data says something
    future = vp.submit(batch)
    assert future is not None
    _same(vp.result(future, batch), here)


def test_a_helper_killed_mid_run_loses_no_batch(helpers, caplog):
    batch = _batch()
    here = validate_batch(batch)
    vp.result(vp.submit(batch), batch)  # the helper is up
    (pid,) = list(vp._POOL.executor._processes)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # reaped: the next use sees a broken pool
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    future = vp.submit(batch)
    got = validate_batch(batch) if future is None else vp.result(future, batch)
    _same(got, here)
    assert vp.submit(batch) is None  # from now on the runner validates itself
    assert "validation process failed" in caplog.text


def test_without_helpers_submit_declines():
    vp.stop()
    assert vp.submit(_batch()) is None


@pytest.mark.parametrize("env, expected", [("0", 0), ("3", 3), ("", None)])
def test_default_processes_follows_the_environment(monkeypatch, env, expected):
    monkeypatch.setenv(vp.ENV, env)
    assert vp.default_processes() == (min(os.cpu_count() or 1, 4) if expected is None else expected)


@pytest.mark.parametrize("env", ["two", "-1", "1.5"])
def test_a_bad_process_count_is_a_clear_error(monkeypatch, env):
    monkeypatch.setenv(vp.ENV, env)
    with pytest.raises(ConfigError, match=vp.ENV):
        vp.default_processes()


def test_only_the_local_native_source_uses_helpers():
    base = IngestOptions(lake_root="/tmp/x", bootstrap="k:9092", topic="t", dlq_topic=None, validate_processes=2)
    assert base.helper_processes == 2
    assert dataclasses.replace(base, runner="FlinkRunner").helper_processes == 0
    assert dataclasses.replace(base, runner="FlinkRunner", kafka_source="xlang").helper_processes == 0
    with pytest.raises(ConfigError, match="--validate-processes"):
        dataclasses.replace(base, validate_processes=-1).validate()


def test_bronze_is_the_same_with_and_without_helpers(kafka_bootstrap, tmp_path):
    topic = f"t-helpers-{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic, f"{topic}-dlq"], partitions=4)
    lakes = [
        Settings(lake_root=str(tmp_path / name), bootstrap=kafka_bootstrap, topic=topic, dlq_topic=None)
        for name in ("with", "without")
    ]
    batch = _batch()
    produce(lakes[0], [(k, v, T0 + i * 1000, i % 4) for i, (k, v) in enumerate(zip(batch.keys, batch.values))])
    ingest(lakes[0], validate_processes=1, poll_batch=16)  # many batches: several in flight at once
    ingest(lakes[1], validate_processes=0, poll_batch=16)
    for table in ("bronze", "rejects"):
        got = [rows_by_offset(s, table) for s in lakes]
        assert len(got[0]) == (201 if table == "bronze" else 7)
        strip = [{k: {c: v for c, v in row.items() if c != "file"} for k, row in g.items()} for g in got]
        assert strip[0] == strip[1]


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_finishes_the_pass_with_its_helpers(settings):
    """A terminal's Ctrl-C reaches every process of the group: the helpers must not die of it,
    the pass in flight commits, the command exits 0, and the helpers leave with it."""
    produced = produce(settings, [(b"V1", snapshot("V1", T0 + i), T0 + i, i % 4) for i in range(3000)])
    cmd = [
        sys.executable,
        "-m",
        "lake.cli",
        "ingest",
        "--lake-root",
        settings.lake_root,
        "--bootstrap",
        settings.bootstrap,
        "--topic",
        settings.topic,
        "--follow",
        "--buffer-seconds",
        "1",
        "--poll-batch",
        "50",
        "--validate-processes",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not files(settings) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first pass has committed: the helpers have been at work
        helpers = psutil.Process(proc.pid).children()
        assert len(helpers) >= 2, helpers  # two validators (and multiprocessing's resource tracker)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    assert "stopping after the pass in flight" in err
    assert "validation process failed" not in err and "Traceback" not in err, err[-2000:]
    _, alive = psutil.wait_procs(helpers, timeout=5)  # multiprocessing's tracker leaves a moment later
    assert not alive, alive
    ingest(settings)  # the rest, if the stop came before the topic was drained
    assert offsets_held(settings) == Counter(produced.keys())
