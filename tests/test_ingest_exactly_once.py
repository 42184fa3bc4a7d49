"""Kill the streaming ingest at random moments (SIGKILL), restart it: every
offset ends in Bronze or rejects exactly once (contract section 2)."""

import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from beam_pipelines.ingest.bronze_state import BronzeStore
from lake.cli import main
from lake_schemas.paths import HOUR_MS
from lake_schemas.topics import DLQ_HEADER_SOURCE
from support.ingest_helpers import (
    T0,
    all_files,
    assert_groups_whole_and_contiguous,
    consume,
    groups,
    hour_of_path,
    ingest,
    markers,
    offsets_held,
    produce,
    rows_by_offset,
    snapshot,
    tree,
)

pytestmark = pytest.mark.kafka_long

N = 8000
BAD_EVERY = 97


def _ingest_cmd(settings):
    return [
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
        "--until-idle",
        "1",
        "--buffer-bytes",
        "20K",
        "--poll-batch",
        "100",
        "--no-progress",
    ]


def _half_done(settings) -> int:
    """Groups with files missing, and temporary files: what a kill mid-commit leaves."""
    incomplete = sum(1 for members in groups(settings).values() for _, _, count, paths in members if len(paths) < count)
    temps = len(glob.glob(f"{settings.lake_root}/bronze/**/.*.inprogress", recursive=True))
    return incomplete + temps


def _wait_for_commits(settings, proc, commits: int, timeout: float = 30.0) -> float:
    """Return as soon as the ``commits``-th new Bronze file appears (or the process ends)."""
    started = time.monotonic()
    seen = set(all_files(settings))
    while proc.poll() is None and time.monotonic() - started < timeout:
        now = set(all_files(settings))
        if now - seen:
            commits -= 1
            if commits <= 0:
                break
            seen = now
        time.sleep(0.001)
    return time.monotonic() - started


def test_sigkill_at_random_moments_loses_and_doubles_nothing(settings):
    records = []
    for i in range(N):
        v = f"V{i % 50}"
        ts = T0 + i * 1300  # 08:00 .. 10:53
        value = b"garbage %d" % i if i % BAD_EVERY == 0 else snapshot(v, ts)
        records.append((v.encode(), value, ts, i % 4))
    produced = produce(settings, records)
    rng = random.Random(20261123)
    kills, mid_ingest, half_done = [], 0, 0
    for attempt in range(8):
        proc = subprocess.Popen(
            _ingest_cmd(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        if attempt % 2 == 0:  # a random moment
            delay = rng.uniform(1.5, 4.5)
            time.sleep(delay)
        else:  # the moment a pass starts renaming its files into place, after a random number of passes
            delay = _wait_for_commits(settings, proc, rng.randint(1, 4))
        if proc.poll() is not None:  # it finished on its own: nothing left to kill
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
            proc.stderr.close()
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        held = offsets_held(settings)
        assert max(held.values(), default=1) == 1, f"an offset is doubled after the kill at {delay:.2f}s"
        kills.append((round(delay, 2), len(held)))
        mid_ingest += 0 < len(held) < N
        half_done += _half_done(settings) > 0
        if len(kills) == 5:
            break
    print(f"kills (delay s, offsets held): {kills}; {half_done} left a half-committed group")
    assert mid_ingest >= 3, f"too few kills landed mid-ingest to prove anything: {kills}"

    done = subprocess.run(_ingest_cmd(settings), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ingested" in done.stdout

    held = offsets_held(settings)
    assert set(held) == set(produced), (
        f"missing {len(set(produced) - set(held))}, extra {len(set(held) - set(produced))}"
    )
    assert set(held.values()) == {1}
    rejects = rows_by_offset(settings, "rejects")
    assert set(rejects) == {k for k, v in produced.items() if v.startswith(b"garbage")}
    assert {r["reason"] for r in rejects.values()} == {"not_json"}
    # The DLQ is written before the commit that holds a reject: a kill may double a DLQ message, never lose one.
    dlq = consume(settings.bootstrap, settings.dlq_topic, expected=len(rejects), timeout_s=30)
    sources = {dict(m.headers())[DLQ_HEADER_SOURCE].decode() for m in dlq}
    assert sources >= {f"{settings.topic}/{p}/{o}" for p, o in rejects}, "a reject never reached the DLQ"
    assert {m.value() for m in dlq} == {produced[k] for k in rejects}  # byte for byte
    ends = {p: max(o for q, o in produced if q == p) for p in range(4)}
    assert_groups_whole_and_contiguous(settings, ends)  # nothing else is there
    assert not glob.glob(f"{settings.lake_root}/bronze/**/.*", recursive=True)
    assert set(markers(settings)) == {T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS}


def test_half_committed_group_is_deleted_and_read_again(settings, capsys):
    def part(start_ms, minutes, partition_bad=None):
        out = [
            (f"V{p}".encode(), snapshot(f"V{p}", start_ms + m * 60_000 + p), start_ms + m * 60_000 + p, p)
            for m in range(minutes)
            for p in range(4)
        ]
        if partition_bad is not None:
            out.append((b"x", b"{broken", start_ms + 61 * 60_000, partition_bad))
        return out

    # run 1: hour 08, and every partition past 09:02, so hour 08 closes by watermark
    first = produce(
        settings,
        part(T0, 60) + [(b"k", snapshot("k", T0 + HOUR_MS + 300_000), T0 + HOUR_MS + 300_000, p) for p in range(4)],
    )
    ingest(settings, until_idle=None, follow=True, max_seconds=1.5, idle_flush_seconds=0.3)
    assert BronzeStore(settings.lake_root).complete_hours() == {T0}
    # run 2: 09:10 .. 10:01 (hours 09 and 10 stay open) and a reject: partition 0 writes a group of three files
    second = produce(settings, part(T0 + HOUR_MS + 600_000, 52, partition_bad=0))
    ingest(settings, until_idle=None, follow=True, max_seconds=1.5, idle_flush_seconds=0.3)
    assert BronzeStore(settings.lake_root).complete_hours() == {T0}
    first_, last_, count, paths = groups(settings)[0][-1]
    assert count == 3 and len(paths) == 3, paths
    assert {hour_of_path(p) for p in paths} == {T0 + HOUR_MS, T0 + 2 * HOUR_MS}

    # the pass "died" before its last rename, and before it wrote a marker
    os.remove(paths[1])
    hour9 = os.path.dirname(paths[0]).replace("/_rejects/", "/telemetry/")
    stray = [
        os.path.join(os.path.dirname(paths[2]), f".{os.path.basename(paths[2])}.inprogress"),
        os.path.join(hour9, "._COMPLETE.inprogress"),
    ]
    for path in stray:
        with open(path, "wb") as f:
            f.write(b"half")
    assert len(offsets_held(settings)) < len(first) + len(second)
    assert BronzeStore(settings.lake_root).state(4).next_offsets[0] == last_ + 1  # resume would skip the lost range
    before = tree(settings.lake_root)

    rc = main(
        [
            "ingest",
            "--lake-root",
            settings.lake_root,
            "--bootstrap",
            settings.bootstrap,
            "--topic",
            settings.topic,
            "--until-idle",
            "0.5",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "recovered: deleted 4 half-committed file(s)" in capsys.readouterr().err
    after = tree(settings.lake_root)
    touched = {os.path.join(settings.lake_root, k) for k, v in before.items() if after.get(k) != v}
    assert touched == {paths[0], paths[2], *stray}  # the rest of the group and the temporaries, nothing else
    assert all(os.path.exists(p) for p in paths)  # the range was read again: the same group, whole
    assert {k: v for k, v in after.items() if "/hour=08/" in k} == {k: v for k, v in before.items() if "/hour=08/" in k}
    held = offsets_held(settings)
    assert set(held) == set(first) | set(second) and set(held.values()) == {1}
    # the range was read again into the hours of its record timestamps (still open)
    rows = {**rows_by_offset(settings, "bronze"), **rows_by_offset(settings, "rejects")}
    for offset in range(first_, last_ + 1):
        row = rows[(0, offset)]
        ts = int(row["ingest_ts"].timestamp() * 1000)
        assert hour_of_path(row["file"]) == ts - ts % HOUR_MS
    assert set(markers(settings)) == {T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS}
    ends = {p: max(o for q, o in set(first) | set(second) if q == p) for p in range(4)}
    assert_groups_whole_and_contiguous(settings, ends)
    assert len(all_files(settings)) >= 8
