"""Kill the streaming ingest at random moments (SIGKILL), restart it: every
offset ends in Bronze or rejects exactly once."""
import os
import random
import signal
import subprocess
import sys
import time

from beam_pipelines.ingest.bronze_state import BronzeStore

from ingest_helpers import T0, files, ingest, offsets_held, produce, snapshot


def _ingest_cmd(settings):
    return [sys.executable, "-m", "lake.cli", "ingest", "--lake-root", settings.lake_root, "--bootstrap",
            settings.bootstrap, "--topic", settings.topic, "--until-idle", "1", "--buffer-bytes", "60K",
            "--poll-batch", "200", "--no-progress"]


def test_sigkill_at_random_moments_loses_and_doubles_nothing(settings):
    records = [(f"V{i % 50}".encode(), snapshot(f"V{i % 50}", T0 + i * 500), T0 + i * 500) for i in range(8000)]
    records[100] = (b"x", b"garbage", T0 + 1)
    produced = produce(settings, records)
    rng = random.Random(20261123)
    kills = 0
    for attempt in range(5):
        proc = subprocess.Popen(_ingest_cmd(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        time.sleep(rng.uniform(2.0, 5.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        held = offsets_held(settings)
        assert max(held.values(), default=1) == 1, "an offset is doubled after a kill"
    assert kills >= 2, "the ingest finished before it could be killed: the test proved nothing"
    done = subprocess.run(_ingest_cmd(settings), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    held = offsets_held(settings)
    assert set(held) == set(produced)
    assert set(held.values()) == {1}


def test_half_committed_group_is_deleted_and_read_again(settings):
    records = [(f"V{i % 4}".encode(), snapshot(f"V{i % 4}", T0 + i * 2000), T0 + i * 2000) for i in range(4000)]
    produced = produce(settings, records)  # spans 08:00 .. 10:13: groups of three files
    ingest(settings)
    multi = [f for f in files(settings) if "-1of3" in f]
    assert multi, "expected groups spanning three hours"
    prefix = os.path.basename(multi[0]).rsplit("-", 1)[0]
    group = [f for f in files(settings) if os.path.basename(f).startswith(prefix + "-")]
    assert len(group) == 3
    os.remove(group[-1])  # as if the pass died before this rename
    before = offsets_held(settings)
    assert set(before) != set(produced)
    deleted = BronzeStore(settings.lake_root).recover()
    assert sorted(deleted) == sorted(group[:-1])
    ingest(settings)
    held = offsets_held(settings)
    assert set(held) == set(produced) and set(held.values()) == {1}
