"""Issue: the ingest never stalls and never skips. Hostile record metadata, the clock, one writer.

Real embedded broker, real Beam passes, real files.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from lake.cli import main
from lake_core.lease import Lease
from lake_schemas import RejectReason
from lake_schemas.paths import HOUR_MS, hour_of_ms
from support.ingest_helpers import T0, consume, hour_of_path, ingest, markers, offsets_held, rows_by_offset, snapshot

YEAR_10000_MS = 253_402_300_800_000
INT64_MAX = 2**63 - 1
OUT_OF_RANGE = RejectReason.RECORD_TIMESTAMP_OUT_OF_RANGE.value


def _produce_raw(settings, records: list[dict]) -> list[tuple[int, int]]:
    """Produce ``{"value", "key", "timestamp", "headers", "partition"}`` dicts as given; their (partition, offset)."""
    positions: list = [None] * len(records)
    producer = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5, "message.max.bytes": 4_000_000})

    def delivered(err, msg, i):
        assert err is None, err
        positions[i] = (msg.partition(), msg.offset())

    for i, r in enumerate(records):
        producer.produce(
            settings.topic,
            value=r.get("value"),
            key=r.get("key"),
            timestamp=r.get("timestamp", 0),
            headers=r.get("headers"),
            partition=r.get("partition", i % 4),
            on_delivery=lambda err, msg, i=i: delivered(err, msg, i),
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    return positions


def test_a_record_from_year_10000_is_a_reject_in_the_earliest_open_hour_and_never_stalls(settings):
    """The repro: every pass died in WriteBronze/Commit (OverflowError), and every restart again."""
    good = snapshot("V1", T0 + 1000)
    positions = _produce_raw(
        settings,
        [
            {"value": good, "timestamp": T0 + 1000, "partition": 0},
            {
                "value": b'{"event_id":"e1","vehicle_id":"V1","ts":1772352000000}',
                "timestamp": YEAR_10000_MS,
                "partition": 0,
            },
        ],
    )
    for _ in range(2):  # `lake ingest --until-idle` twice: both exit 0
        ingest(settings)
    rejects = rows_by_offset(settings, "rejects")
    [(key, row)] = rejects.items()
    assert key == positions[1] and row["reason"] == OUT_OF_RANGE
    assert str(YEAR_10000_MS) in row["reason_detail"] and row["vehicle_id"] == "V1"
    assert hour_of_path(row["file"]) == hour_of_ms(T0)  # the earliest open hour, not a new one
    assert row["ingest_ts"].timestamp() * 1000 == hour_of_ms(T0)
    assert set(markers(settings)) == {hour_of_ms(T0)}  # no hour of its own was opened or closed
    assert set(offsets_held(settings).values()) == {1}


def test_a_record_a_few_years_ahead_does_not_open_a_future_hour(settings):
    """It opened a future hour; a drained run closed every hour up to it and later records fell into it."""
    future = int(time.time() * 1000) + 3 * 365 * 24 * HOUR_MS
    _produce_raw(
        settings,
        [
            {"value": snapshot("V1", T0), "timestamp": T0, "partition": 0},
            {"value": snapshot("V1", T0), "timestamp": future, "partition": 0},
        ],
    )
    ingest(settings)
    _produce_raw(settings, [{"value": snapshot("V1", T0 + HOUR_MS), "timestamp": T0 + HOUR_MS, "partition": 1}])
    ingest(settings)
    hours = {hour_of_path(r["file"]) for r in rows_by_offset(settings, "bronze").values()}
    assert hours == {hour_of_ms(T0), hour_of_ms(T0 + HOUR_MS)}  # the later record is in its own hour
    assert max(markers(settings)) < future


def test_until_idle_leaves_the_hour_still_running_open(settings):
    """A drained run at 10:20 used to close hour 10: runs every few minutes drifted records into later hours."""
    now = int(time.time() * 1000)
    _produce_raw(settings, [{"value": snapshot("V1", now), "timestamp": now, "partition": 0}])
    ingest(settings)
    assert markers(settings) == {}  # the current hour is not over on the ingest's clock
    ingest(settings, close_open_hours=True)  # a replay: close what it holds
    assert set(markers(settings)) == {hour_of_ms(now)}


def _hostile_records(rng: random.Random, n: int) -> list[dict]:
    stamps = [0, 1, 86_400_000, 946_684_799_999, 946_684_800_000, T0, 4_070_908_800_000, YEAR_10000_MS, INT64_MAX]
    keys = [None, b"", b"V1", b"\xff\xfe\x00bad", b"k" * 100_000, "V\u00e9".encode()]
    values = [
        None,
        b"",
        snapshot("V1", T0),
        b"\xff\xfe not utf-8",
        b"{not json",
        b"[1,2,3]",
        b'{"did":"V2","timestamp":1772352000000,"name":"soc","int_value":5}',
        b"x" * 20_000,  # over 16 KiB
        b'{"event_id":"e","vehicle_id":"V 1","ts":1}',
    ]
    headers = [None, [("h", b"v")], [("\u00e9", b"\xff")], [("big", b"h" * 10_000)]]
    return [
        {
            "value": rng.choice(values),
            "key": rng.choice(keys),
            "timestamp": rng.choice(stamps),
            "headers": rng.choice(headers),
            "partition": rng.randrange(4),
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_metadata_every_offset_lands_once_and_the_ingest_exits_0(settings, seed):
    records = _hostile_records(random.Random(seed), 120)
    positions = _produce_raw(settings, records)
    assert (
        main(
            [
                "ingest",
                "--lake-root",
                settings.lake_root,
                "--bootstrap",
                settings.bootstrap,
                "--topic",
                settings.topic,
                "--until-idle",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    held = offsets_held(settings)
    assert set(held) == set(positions) and set(held.values()) == {1}
    rejects = rows_by_offset(settings, "rejects")
    for record, position in zip(records, positions):
        ts = record["timestamp"]
        if ts != 0 and (ts < 946_684_800_000 or ts > time.time() * 1000 + HOUR_MS):
            assert rejects[position]["reason"] == OUT_OF_RANGE, (record["timestamp"], position)
    assert main(["query", "--lake-root", settings.lake_root, "select count(*) from bronze_rejects"]) == 0


def test_two_ingests_on_one_lake_one_runs_the_other_exits_3_naming_it(settings, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\nfrom lake_core.lease import Lease\n"
            "l = Lease(sys.argv[1], 'ingest-' + sys.argv[2], 'ingest of ' + sys.argv[2]).acquire()\n"
            "print('held', flush=True); time.sleep(60)",
            settings.lake_root,
            settings.topic,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = [
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
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "since" in err and len(err.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    assert main(argv) == 0  # the killed holder's lease is taken over
    with Lease(settings.lake_root, f"ingest-{settings.topic}", "check"):
        pass  # released at the end of the run


@pytest.mark.kafka_long
def test_an_undelivered_dlq_fails_the_pass_before_its_commit_and_nothing_is_dropped(settings, monkeypatch, capsys):
    """The DLQ was produced after the commit and flush()'s result ignored: a reject's only exact copy could go."""
    from beam_pipelines.ingest import pipeline

    monkeypatch.setattr(pipeline, "PASS_RETRY_DELAYS_S", (0.1, 0.1))
    positions = _produce_raw(
        settings,
        [
            {"value": snapshot("V1", T0), "timestamp": T0, "partition": 0},
            {"value": b"{bad", "timestamp": T0, "partition": 1},
        ],
    )
    argv = [
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
    monkeypatch.setenv("LAKE_DLQ_TOPIC", "no such topic!")  # an illegal name: every delivery fails
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "DLQ topic no such topic!" in err and err.count("retrying") == 2
    assert positions[1] not in offsets_held(settings)  # the reject was not committed without its DLQ copy
    assert positions[0] in offsets_held(settings)  # the other partition's group is whole and committed
    monkeypatch.setenv("LAKE_DLQ_TOPIC", settings.dlq_topic)
    assert main(argv) == 0
    assert set(offsets_held(settings)) == set(positions)
    [dead] = consume(settings.bootstrap, settings.dlq_topic, expected=1, timeout_s=10)
    assert (
        dead.value() == b"{bad"
        and dict(dead.headers())["lake.source"] == f"{settings.topic}/1/{positions[1][1]}".encode()
    )


@pytest.mark.kafka_long
def test_two_ingests_started_together_one_runs_and_after_its_kill_the_next_takes_over(settings):
    import os
    import signal

    produced = _produce_raw(settings, [{"value": snapshot("V1", T0 + i), "timestamp": T0 + i} for i in range(2000)])
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
        "--idle-flush",
        "0.5",
        "--buffer-seconds",
        "2",
        "--no-progress",
    ]
    both = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in both) and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = [p for p in both if p.poll() is not None]
        assert len(refused) == 1, "exactly one of two ingests started together must be refused"
        [running] = [p for p in both if p is not refused[0]]
        err = refused[0].stderr.read()
        assert refused[0].returncode == 3 and f"pid {running.pid}" in err, err
        time.sleep(2)
        assert running.poll() is None
    finally:
        for p in both:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            p.stdout.close()
            p.stderr.close()
    after = subprocess.run(
        [*cmd[:-6], "--until-idle", "1", "--no-progress"], capture_output=True, text=True, timeout=120
    )
    assert after.returncode == 0, after.stderr  # the killed ingest's lease is taken over
    held = offsets_held(settings)
    assert set(held) == set(produced) and set(held.values()) == {1}
