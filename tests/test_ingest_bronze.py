"""Kafka -> Beam -> Bronze on the real embedded broker and FnApiRunner."""
import glob
import json
import os

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from beam_pipelines.ingest.bronze_state import BronzeStore
from lake.cli import main
from lake_schemas import BRONZE_SCHEMA, REJECTS_SCHEMA

from ingest_helpers import HOUR_MS, T0, files, ingest, offsets_held, produce, read, signal, snapshot


def _mixed(n_per_hour=60, hours=3):
    records = []
    for h in range(hours):
        for i in range(n_per_hour):
            v = f"V{i % 12:03d}"
            ts = T0 + h * HOUR_MS + i * 1000
            value = snapshot(v, ts) if i % 2 else signal(v, ts)
            records.append((v.encode(), value, ts))
    records += [(b"bad", b"not json", T0 + 5), (b"bad", b"", T0 + 6), (b"bad", b'{"did":"1","timestamp":1,"name":"x"}', T0 + 7)]
    return records


def test_every_offset_exactly_once_in_its_hour(settings):
    records = _mixed()
    produced = produce(settings, records)
    report = ingest(settings)
    assert report.total("records") == len(records)
    held = offsets_held(settings)
    assert set(held) == set(produced) and set(held.values()) == {1}

    bronze, rejects = read(settings, "bronze"), read(settings, "rejects")
    assert bronze.num_rows == len(records) - 3 and rejects.num_rows == 3
    assert bronze.drop(["year", "month", "day", "hour"]).schema.equals(BRONZE_SCHEMA)
    assert rejects.drop(["year", "month", "day", "hour"]).schema.equals(REJECTS_SCHEMA)
    by_offset = {(r["kafka_partition"], r["kafka_offset"]): r for r in bronze.to_pylist()}
    for key, row in by_offset.items():
        assert row["payload"].encode() == produced[key]  # byte-identical
        assert row["hour"] == (row["ingest_ts"].hour)  # the hour of the Kafka record timestamp
    assert sorted(rejects["reason"].to_pylist()) == ["empty", "not_json", "unknown_signal"]
    assert {r for r in bronze["vehicle_id"].to_pylist()} == {f"V{i:03d}" for i in range(12)}


def test_complete_markers_name_files_and_offsets(settings):
    produce(settings, _mixed(hours=2))
    ingest(settings)
    markers = sorted(glob.glob(f"{settings.lake_root}/bronze/telemetry/**/_COMPLETE", recursive=True))
    assert len(markers) == 2
    for path in markers:
        marker = json.loads(open(path).read())
        folder = os.path.dirname(path)
        listed = {e["file"] for e in marker["files"] if e["table"] == "bronze_telemetry"}
        assert listed == {f for f in os.listdir(folder) if f.endswith(".parquet")}
        assert marker["rows"] == sum(e["rows"] for e in marker["files"])
        assert marker["completed_by"] == "drained" and marker["offsets"]


def test_dlq_receives_refused_messages(settings):
    produce(settings, [(b"k", b"{oops", T0), (b"k", b"[1]", T0 + 1), (b"V1", snapshot("V1", T0), T0 + 2)])
    ingest(settings)
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(settings.dlq_topic, p, 0) for p in range(4)])
    got, waited = [], 0
    while len(got) < 2 and waited < 20:
        got += [m for m in c.consume(10, 1.0) if m.error() is None]
        waited += 1
    c.close()
    reasons = sorted(dict(m.headers())["lake.reason"].decode() for m in got)
    assert reasons == ["not_json", "not_object"]
    assert sorted(m.value() for m in got) == [b"[1]", b"{oops"]


def test_rerun_changes_nothing_and_late_data_goes_to_open_hour(settings):
    produce(settings, _mixed(hours=2))
    ingest(settings)
    before = {f: os.path.getmtime(f) for f in files(settings)}
    ingest(settings)  # nothing new
    assert {f: os.path.getmtime(f) for f in files(settings)} == before
    # A record for hour 08, which is complete: it lands in the earliest open hour (10).
    produce(settings, [(b"V1", snapshot("V1", T0 + 60_000), T0 + 60_000)])
    ingest(settings)
    assert {f: os.path.getmtime(f) for f in files(settings) if f in before} == before
    late = [f for f in files(settings) if f not in before]
    assert len(late) == 1 and "/hour=10/" in late[0]
    assert offsets_held(settings).most_common(1)[0][1] == 1


def test_buffer_by_size_gives_several_groups(settings):
    records = [(f"V{i % 8}".encode(), snapshot(f"V{i % 8}", T0 + i), T0 + i) for i in range(2000)]
    produced = produce(settings, records)
    report = ingest(settings, buffer_bytes=20_000, poll_batch=50)
    assert len(report.passes) > 2
    assert any("bytes" in p.ended_by.values() for p in report.passes)
    held = offsets_held(settings)
    assert set(held) == set(produced) and set(held.values()) == {1}
    assert len(files(settings)) > 8


def test_buffer_by_time_with_a_live_producer(settings):
    import threading
    import time

    stop = threading.Event()
    sent = []

    def keep_producing():
        i = 0
        while not stop.is_set():
            sent.append(produce(settings, [(b"V1", snapshot("V1", T0 + i), T0 + i)]))
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=keep_producing)
    t.start()
    try:
        report = ingest(settings, until_idle=None, follow=True, buffer_seconds=1.5, max_seconds=5)
    finally:
        stop.set()
        t.join()
    assert len(report.passes) >= 2
    assert all("idle" not in p.ended_by.values() for p in report.passes[:-1])
    ingest(settings)  # drain the rest
    produced = {k: v for d in sent for k, v in d.items()}
    held = offsets_held(settings)
    assert set(held) == set(produced) and set(held.values()) == {1}


def test_watermark_closes_only_passed_hours(settings):
    # Every partition gets records up to 09:03 -> hour 08 closes (09:00 + 2 min), 09 stays open.
    records = []
    for p_key in range(40):
        v = f"V{p_key}"
        records += [(v.encode(), snapshot(v, T0 + 1000), T0 + 1000), (v.encode(), snapshot(v, T0 + HOUR_MS + 180_000), T0 + HOUR_MS + 180_000)]
    produce(settings, records)
    ingest(settings, until_idle=None, follow=True, max_seconds=4, idle_flush_seconds=0.5)
    store = BronzeStore(settings.lake_root)
    assert store.complete_hours() == {T0}


def test_refuses_more_than_one_worker(settings, capsys):
    rc = main(["ingest", "--lake-root", settings.lake_root, "--bootstrap", settings.bootstrap, "--topic",
               settings.topic, "--until-idle", "0.5", "--direct_num_workers=2"])
    assert rc == 2
    assert "direct_num_workers must be 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code", [
    (["ingest", "--until-idle", "-1"], 2),
    (["ingest", "--buffer-bytes", "lots"], 2),
    (["ingest", "--bootstrap", "127.0.0.1:1", "--until-idle", "1"], 3),
    (["ingest", "--kafka-source", "xlang", "--until-idle", "1"], 2),
])
def test_bad_flags_and_unreachable_broker(argv, code, lake_root, capsys):
    assert main([*argv, "--lake-root", lake_root]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("lake: error:") and "\n" not in err
