"""Kafka -> Beam -> Bronze on the real embedded broker and FnApiRunner (contract section 2)."""

import datetime as dt
import json
import os
import threading
import time
import uuid

import pyarrow.parquet as pq
import pytest

from beam_pipelines.ingest.bronze_state import BronzeStore
from lake.cli import main
from lake_core import kafka_admin
from lake_core.settings import Settings
from lake_schemas import BRONZE_SCHEMA, REJECTS_SCHEMA, BronzeFileName
from lake_schemas.paths import HOUR_MS
from lake_schemas.topics import DLQ_HEADER_REASON, DLQ_HEADER_SOURCE
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
    produce_indexed,
    rows_by_offset,
    signal,
    snapshot,
    tree,
)

UTC = dt.timezone.utc


def _iso(ms: int, offset_hours: int = 0) -> str:
    tz = dt.timezone(dt.timedelta(hours=offset_hours))
    t = dt.datetime.fromtimestamp(ms / 1000, tz)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _floor_hour(ms: int) -> int:
    return ms - ms % HOUR_MS


def _end_offsets(positions) -> dict:
    ends = {p: -1 for p in range(4)}
    for p, o in positions:
        ends[p] = max(ends[p], o)
    return ends


# -- one mixed data set, ingested once ----------------------------------------


def _mixed_records():
    """Both shapes (epoch-ms, Z and offset times) and bad messages, over hours 08..10,
    on chosen partitions. -> (records, expectations in the same order)."""
    records, expected = [], []

    def add(key, value, ts, partition, reason=None, vehicle=None, event_ms=None):
        records.append((key, value, ts, partition))
        expected.append(
            {"key": key, "value": value, "ts": ts, "reason": reason, "vehicle": vehicle, "event_ms": event_ms}
        )

    for h in range(3):
        for i in range(40):
            v = f"V{i % 8:03d}"
            ts = T0 + h * HOUR_MS + i * 60_000 + 1234
            ev = ts - 30_000  # the event happened before it was sent
            kind = i % 4
            if kind == 0:
                value = snapshot(v, ev)
            elif kind == 1:
                value = snapshot(v, ev, ts=_iso(ev))
            elif kind == 2:
                value = snapshot(v, ev, ts=_iso(ev, offset_hours=-5))
            else:
                value = signal(v, ev, name=["odometer", "soc", "speed", "lat", "lon"][i % 5])
            add(v.encode(), value, ts, i % 4, vehicle=v, event_ms=ev)
    # out of order: an 08:xx record sent after the 10:xx ones still lands in hour 08
    add(b"V001", snapshot("V001", T0 + 50 * 60_000), T0 + 55 * 60_000, 1, vehicle="V001", event_ms=T0 + 50 * 60_000)
    # no key
    add(None, snapshot("V002", T0 + 5), T0 + 10, 2, vehicle="V002", event_ms=T0 + 5)
    # exactly 16 KiB is fine
    base = snapshot("V003", T0 + HOUR_MS, pad="")
    doc = json.loads(base)
    doc["pad"] = "y" * (16384 - len(base))
    big = json.dumps(doc).encode()
    assert len(big) == 16384
    add(b"V003", big, T0 + HOUR_MS + 7, 3, vehicle="V003", event_ms=T0 + HOUR_MS)
    # bad ones, in every hour and partition
    doc["pad"] += "y"
    add(b"V003", json.dumps(doc).encode(), T0 + HOUR_MS + 8, 3, reason="too_large")
    add(b"bad", b"not json", T0 + 5, 0, reason="not_json")
    add(b"bad", b'{"event_id": "a", "vehicle_id":', T0 + 2 * HOUR_MS + 9, 1, reason="not_json")
    add(b"bad", b"", T0 + 6, 1, reason="empty")
    add(b"bad", None, T0 + HOUR_MS + 6, 2, reason="empty")  # a tombstone
    add(b"bad", b"[1, 2]", T0 + 2 * HOUR_MS + 6, 2, reason="not_object")
    add(b"bad", b'{"hello": "world"}', T0 + 2 * HOUR_MS + 7, 3, reason="unknown_shape")
    add(b"bad", b'\xff\xfe{"x": 1}', T0 + HOUR_MS + 9, 0, reason="not_utf8")
    add(
        b"1000",
        signal("1000", T0 + 77, name="tyre"),
        T0 + 100,
        3,
        reason="unknown_signal",
        vehicle="1000",
        event_ms=T0 + 77,
    )
    add(b"V9", snapshot("V9", T0, ts="2026-03-01T08:00:00"), T0 + 101, 0, reason="invalid_ts", vehicle="V9")
    add(b"V9", snapshot("V9", T0, battery={"soc_pct": "high"}), T0 + 102, 1, reason="invalid_value")
    add(b"V9", json.dumps({"event_id": "e", "ts": T0}).encode(), T0 + 103, 2, reason="missing_field")
    return records, expected


@pytest.fixture(scope="module")
def landed(kafka_bootstrap, tmp_path_factory):
    topic = f"t-bronze-{uuid.uuid4().hex[:8]}"
    s = Settings(
        lake_root=str(tmp_path_factory.mktemp("lake")), bootstrap=kafka_bootstrap, topic=topic, dlq_topic=f"{topic}-dlq"
    )
    kafka_admin.ensure_topics(kafka_bootstrap, [s.topic, s.dlq_topic], partitions=4)
    records, expected = _mixed_records()
    positions = produce_indexed(s, records)
    report = ingest(s)
    return s, dict(zip(positions, expected)), report


def test_every_offset_exactly_once(landed):
    s, expected, report = landed
    held = offsets_held(s)
    assert set(held) == set(expected)
    assert set(held.values()) == {1}
    n_rejects = sum(1 for e in expected.values() if e["reason"])
    assert report.total("records") == len(expected)
    assert (report.total("bronze_rows"), report.total("reject_rows")) == (len(expected) - n_rejects, n_rejects)
    assert [p.ended_by for p in report.passes][-1] == {p: "idle" for p in range(4)}
    assert_groups_whole_and_contiguous(s, _end_offsets(expected))


def test_rows_land_in_the_hour_of_their_record_timestamp(landed):
    s, expected, _ = landed
    for table in ("bronze", "rejects"):
        for key, row in rows_by_offset(s, table).items():
            ts = expected[key]["ts"]
            assert row["ingest_ts"] == dt.datetime.fromtimestamp(ts / 1000, UTC)
            assert hour_of_path(row["file"]) == _floor_hour(ts), (table, key, row["file"])
            hour = dt.datetime.fromtimestamp(_floor_hour(ts) / 1000, UTC)
            assert f"/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/" in row["file"]
    hours = {hour_of_path(f) for f in all_files(s)}
    assert hours == {T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS}


def test_every_file_has_the_contract_schema(landed):
    s, _, _ = landed
    checked = 0
    for path in all_files(s):
        schema = pq.read_schema(path)
        expected = BRONZE_SCHEMA if "/bronze/telemetry/" in path else REJECTS_SCHEMA
        assert schema.equals(expected, check_metadata=False), f"{path}:\n{schema}"
        checked += 1
    assert checked >= 6


def test_bronze_keeps_payload_key_and_parsed_columns(landed):
    s, expected, _ = landed
    bronze = rows_by_offset(s, "bronze")
    assert set(bronze) == {k for k, e in expected.items() if not e["reason"]}
    for key, row in bronze.items():
        e = expected[key]
        assert row["payload"].encode("utf-8") == e["value"]  # byte-identical
        assert row["key"] == (None if e["key"] is None else e["key"].decode())
        assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (s.topic, *key)
        assert row["vehicle_id"] == e["vehicle"]
        assert row["event_ts"] == dt.datetime.fromtimestamp(e["event_ms"] / 1000, UTC)


def test_rejects_carry_the_reason_and_the_message(landed):
    s, expected, _ = landed
    rejects = rows_by_offset(s, "rejects")
    assert set(rejects) == {k for k, e in expected.items() if e["reason"]}
    for key, row in rejects.items():
        e = expected[key]
        assert row["reason"] == e["reason"], row["reason_detail"]
        assert row["reason_detail"]
        if e["value"] is None:
            assert row["payload"] == ""  # a tombstone
        elif e["reason"] == "not_utf8":
            assert row["payload"].encode("utf-8", "surrogateescape") != e["value"]
            assert row["payload"] == e["value"].decode("utf-8", "backslashreplace")
        else:
            assert row["payload"].encode("utf-8") == e["value"]
        if e["vehicle"]:
            assert row["vehicle_id"] == e["vehicle"]
        if e["event_ms"]:
            assert row["event_ts"] == dt.datetime.fromtimestamp(e["event_ms"] / 1000, UTC)


def test_dlq_received_each_refused_message_with_its_reason(landed):
    s, expected, _ = landed
    refused = {k: e for k, e in expected.items() if e["reason"]}
    got = consume(s.bootstrap, s.dlq_topic, len(refused))
    assert len(got) == len(refused)  # a clean run: each exactly once
    by_source = {}
    for m in got:
        headers = {k: v.decode() for k, v in m.headers()}
        by_source[headers[DLQ_HEADER_SOURCE]] = (m, headers)
    assert set(by_source) == {f"{s.topic}/{p}/{o}" for p, o in refused}
    for (p, o), e in refused.items():
        m, headers = by_source[f"{s.topic}/{p}/{o}"]
        assert headers[DLQ_HEADER_REASON] == e["reason"]
        assert m.value() == e["value"]  # the exact bytes, not UTF-8 included
        assert m.key() == e["key"]


def test_complete_marker_in_every_hour_names_its_files_and_offsets(landed):
    s, _, _ = landed
    found = markers(s)
    assert set(found) == {T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS}
    for hour_ms, marker in found.items():
        assert marker["hour"] == dt.datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%dT%H")
        assert marker["completed_by"] == "drained"
        in_hour = [f for f in all_files(s) if hour_of_path(f) == hour_ms]
        listed = {(e["table"], e["file"]): e for e in marker["files"]}
        actual = {
            ("bronze_telemetry" if "/bronze/telemetry/" in f else "bronze_rejects", os.path.basename(f)): f
            for f in in_hour
        }
        assert set(listed) == set(actual)
        ranges = {}
        for key, path in actual.items():
            offsets = pq.read_table(path, columns=["kafka_offset"])["kafka_offset"].to_pylist()
            entry = listed[key]
            name = BronzeFileName.parse(key[1])
            assert (entry["partition"], entry["rows"]) == (name.partition, len(offsets))
            assert (entry["min_offset"], entry["max_offset"]) == (min(offsets), max(offsets))
            r = ranges.setdefault(str(name.partition), [min(offsets), max(offsets)])
            r[0], r[1] = min(r[0], min(offsets)), max(r[1], max(offsets))
        assert marker["offsets"] == ranges
        assert marker["rows"] == sum(e["rows"] for e in marker["files"])


def test_no_temporary_or_foreign_files_are_left(landed):
    s, _, _ = landed
    for folder, _, names in os.walk(os.path.join(s.lake_root, "bronze")):
        for name in names:
            assert name == "_COMPLETE" or BronzeFileName.parse(name) is not None, os.path.join(folder, name)


# -- re-runs and late records -------------------------------------------------


def _two_hours(n=40):
    return [
        (f"V{i % 8}".encode(), snapshot(f"V{i % 8}", T0 + h * HOUR_MS + i * 1000), T0 + h * HOUR_MS + i * 1000, i % 4)
        for h in range(2)
        for i in range(n)
    ]


@pytest.mark.kafka_long
def test_rerun_changes_nothing_and_late_records_land_in_the_earliest_open_hour(settings, capsys):
    produced = produce(settings, _two_hours())
    ingest(settings)
    assert set(markers(settings)) == {T0, T0 + HOUR_MS}
    before = tree(settings.lake_root + "/bronze")

    # nothing new: the CLI runs a pass, reads nothing, writes nothing
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
    assert main(argv) == 0
    assert "ingested 0 records" in capsys.readouterr().out
    assert tree(settings.lake_root + "/bronze") == before

    # late records for the complete hours 08 and 09 (a good one and a bad one), and one for 10
    late = produce(
        settings,
        [
            (b"V1", snapshot("V1", T0 + 60_000), T0 + 60_000, 0),
            (b"V2", b"late garbage", T0 + HOUR_MS + 5, 1),
            (b"V3", snapshot("V3", T0 + 2 * HOUR_MS + 1), T0 + 2 * HOUR_MS + 1, 2),
        ],
    )
    assert main(argv) == 0
    after = tree(settings.lake_root + "/bronze")
    assert {k: v for k, v in after.items() if k in before} == before  # complete hours never change
    new = sorted(set(after) - set(before))
    assert all("/hour=10/" in f for f in new), new
    assert any(f.startswith("telemetry/") for f in new) and any(f.startswith("_rejects/") for f in new)
    rows = {**rows_by_offset(settings, "bronze"), **rows_by_offset(settings, "rejects")}
    for key in late:
        assert hour_of_path(rows[key]["file"]) == T0 + 2 * HOUR_MS
    # the row keeps its real Kafka timestamp; only its folder is the open hour
    v1 = next(k for k, v in late.items() if b'"V1"' in v)
    assert rows[v1]["ingest_ts"] == dt.datetime.fromtimestamp((T0 + 60_000) / 1000, UTC)
    marker10 = markers(settings)[T0 + 2 * HOUR_MS]
    assert {e["file"] for e in marker10["files"]} == {os.path.basename(f) for f in new if f.endswith(".parquet")}
    held = offsets_held(settings)
    assert set(held) == set(produced) | set(late) and set(held.values()) == {1}


# -- buffering ------------------------------------------------------------------


@pytest.mark.kafka_long
def test_buffer_by_size_gives_several_groups_per_partition(settings):
    records = [(f"V{i % 8}".encode(), snapshot(f"V{i % 8}", T0 + i * 1000), T0 + i * 1000, i % 4) for i in range(2000)]
    produced = produce(settings, records)
    report = ingest(settings, buffer_bytes=20_000, poll_batch=50)
    assert len(report.passes) >= 4
    assert sum("bytes" in p.ended_by.values() for p in report.passes) >= 3
    held = offsets_held(settings)
    assert set(held) == set(produced) and set(held.values()) == {1}
    found = groups(settings)
    assert all(len(found[p]) >= 3 for p in range(4)), {p: len(g) for p, g in found.items()}
    assert_groups_whole_and_contiguous(settings, _end_offsets(produced))


@pytest.mark.kafka_long
def test_buffer_by_time_with_a_producer_still_writing(settings):
    from confluent_kafka import Producer

    stop = threading.Event()
    acked = {}

    def keep_producing():
        p = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 0})
        i = 0
        while not stop.is_set():
            ts = T0 + i * 100
            p.produce(
                settings.topic,
                snapshot("V1", ts),
                key=f"V{i % 4}".encode(),
                timestamp=ts,
                partition=i % 4,
                on_delivery=lambda err, m: acked.__setitem__((m.partition(), m.offset()), m.value()),
            )
            p.poll(0)
            i += 1
            time.sleep(0.01)
        p.flush(10)

    writer = threading.Thread(target=keep_producing, daemon=True)
    writer.start()
    while not acked:
        time.sleep(0.05)
    threading.Timer(4.0, stop.set).start()  # the producer stops after 4 s; the ingest then drains
    try:
        report = ingest(settings, buffer_seconds=1.0, until_idle=1.0, max_seconds=60)
    finally:
        stop.set()
        writer.join(15)
    ended = [set(p.ended_by.values()) for p in report.passes]
    assert sum("time" in e for e in ended) >= 2, ended
    assert report.total("seconds") < 50, "did not drain after the producer stopped"
    ingest(settings)  # what a stall of the producer thread may have left for later
    held = offsets_held(settings)
    assert set(held) == set(acked) and set(held.values()) == {1}
    assert len(acked) > 100
    assert_groups_whole_and_contiguous(settings, _end_offsets(acked))


@pytest.mark.kafka_long
def test_until_idle_drains_even_when_a_pass_is_shorter_than_the_idle_bound(settings):
    """--buffer-seconds 0.5 --until-idle 1: every pass ends by time before it can see 1 s of
    quiet; the run must still notice the drained topic, close the hours and return."""
    produced = produce(settings, _two_hours(8))
    started = time.monotonic()
    report = ingest(settings, buffer_seconds=0.5, until_idle=1.0, max_seconds=20)
    assert time.monotonic() - started < 15, [p.ended_by for p in report.passes]
    assert set(markers(settings)) == {T0, T0 + HOUR_MS}
    assert set(offsets_held(settings)) == set(produced)


# -- completion by watermark ------------------------------------------------------


def _follow(settings, expected_offsets: int):
    """Follow mode (no drain: hours close only by watermark) until Bronze holds ``expected_offsets``."""
    for _ in range(10):
        ingest(settings, until_idle=None, follow=True, max_seconds=1.0, idle_flush_seconds=0.3)
        if len(offsets_held(settings)) >= expected_offsets:
            return
    raise AssertionError(f"follow mode did not read {expected_offsets} offsets")


@pytest.mark.kafka_long
def test_an_hour_closes_when_every_partition_passed_its_end_plus_lateness(settings):
    store = BronzeStore(settings.lake_root)
    closes_at = T0 + HOUR_MS + 120_000  # 09:02:00.000 closes hour 08 (default lateness 2 min)
    # partitions 0..2 are far past 09:02; partition 3 has said nothing yet
    produce(
        settings,
        [(b"k", snapshot("V1", T0 + 600_000), T0 + 600_000, p) for p in range(3)]
        + [(b"k", snapshot("V1", T0 + HOUR_MS + 1_800_000), T0 + HOUR_MS + 1_800_000, p) for p in range(3)],
    )
    _follow(settings, 6)
    assert store.complete_hours() == set(), "a silent partition must hold every hour open"
    # partition 3 one millisecond short of the bound
    produce(
        settings,
        [
            (b"k", snapshot("V1", T0 + 300_000), T0 + 300_000, 3),
            (b"k", snapshot("V1", closes_at - 1), closes_at - 1, 3),
        ],
    )
    _follow(settings, 8)
    assert store.complete_hours() == set(), "closed before every partition passed end + lateness"
    # partition 3 reaches the bound: hour 08 closes, hour 09 stays open
    produce(settings, [(b"k", snapshot("V1", closes_at), closes_at, 3)])
    _follow(settings, 9)
    assert store.complete_hours() == {T0}
    assert markers(settings)[T0]["completed_by"] == "watermark"
    hour8 = {k: v for k, v in tree(settings.lake_root + "/bronze").items() if "/hour=08/" in k}
    # a late record for 08 lands in 09, the earliest open hour; 08 does not change
    late = produce(settings, [(b"k", snapshot("V1", T0 + 1000), T0 + 1000, 0)])
    _follow(settings, 10)
    assert {k: v for k, v in tree(settings.lake_root + "/bronze").items() if "/hour=08/" in k} == hour8
    row = rows_by_offset(settings, "bronze")[next(iter(late))]
    assert hour_of_path(row["file"]) == T0 + HOUR_MS
    assert store.complete_hours() == {T0}
    # draining closes the rest
    ingest(settings)
    assert store.complete_hours() == {T0, T0 + HOUR_MS}
    assert markers(settings)[T0 + HOUR_MS]["completed_by"] == "drained"
    held = offsets_held(settings)
    assert len(held) == 10 and set(held.values()) == {1}


# -- flags and errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "flag", [["--direct_num_workers=2"], ["--direct_num_workers", "2"], ["--direct_num_workers=0"]]
)
def test_more_than_one_worker_is_refused(settings, capsys, flag):
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
            *flag,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "direct_num_workers must be 1" in err and "\n" not in err


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--until-idle", "-1"], 2),
        (["--until-idle", "soon"], 2),
        (["--buffer-bytes", "lots"], 2),
        (["--buffer-seconds", "0"], 2),
        (["--poll-batch", "0"], 2),
        (["--until-idle", "1", "--follow"], 2),
        (["--kafka-source", "xlang", "--until-idle", "1"], 2),
        (["--kafka-source", "carrier-pigeon"], 2),
        (["--until-idel", "1", "--max-seconds", "3"], 2),  # a typo must not be dropped as an unknown Beam option
        (["--until-idle", "1", "--direct_num_workers=many"], 2),  # a bad value for a Beam option: not pages of usage
        (["--runner", "FlinkRunner", "--parallelism", "x"], 2),
        (["--lake-root", "ftp://host/lake", "--until-idle", "1"], 2),
        # waits out the broker connect timeout (~10 s)
        pytest.param(["--bootstrap", "127.0.0.1:1", "--until-idle", "1"], 3, marks=pytest.mark.slow),
    ],
)
def test_bad_flags_and_unreachable_broker_give_one_line_and_an_exit_code(argv, code, lake_root, capsys):
    started = time.monotonic()
    rc = main(["ingest", "--lake-root", lake_root, *argv])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == code, captured
    assert err.startswith("lake: error:") and "\n" not in err and "Traceback" not in err, err
    assert time.monotonic() - started < 20
    assert not os.path.exists(os.path.join(lake_root, "bronze"))


def test_a_mistyped_topic_is_refused_and_not_created(kafka_bootstrap, lake_root, capsys):
    from lake_core.errors import BrokerUnavailableError
    from lake_core.kafka_admin import partition_count

    for _ in range(2):  # the first attempt must not have created it (brokers auto-create named topics)
        rc = main(
            [
                "ingest",
                "--lake-root",
                lake_root,
                "--bootstrap",
                kafka_bootstrap,
                "--topic",
                "vehicle-telemtry",
                "--until-idle",
                "1",
            ]
        )
        err = capsys.readouterr().err.strip()
        assert rc == 3 and "topic 'vehicle-telemtry' does not exist" in err, err
    with pytest.raises(BrokerUnavailableError):
        partition_count(kafka_bootstrap, "vehicle-telemtry")
    assert not os.path.exists(os.path.join(lake_root, "bronze"))


def test_after_the_first_look_a_store_lists_only_the_days_from_the_earliest_open_hour(settings):
    """Complete hours never change, so passes do not re-list them: the cost of a pass does not
    grow with the days Bronze holds. Proven by changing a complete hour behind the store's back."""
    import shutil

    from lake_schemas.paths import hour_partition

    produce(settings, _two_hours(4))
    ingest(settings)  # drained: both hours complete
    store = BronzeStore(settings.lake_root)
    first = store.files()
    assert {f.hour_ms for f in first} == {T0, T0 + HOUR_MS} and store.complete_hours() == {T0, T0 + HOUR_MS}
    later = T0 + 30 * HOUR_MS  # what a writer adds in an open hour, a day later
    sample = next(f for f in first if f.table == "bronze_telemetry")
    new_dir = os.path.join(store.tables["bronze_telemetry"], hour_partition(later))
    os.makedirs(new_dir)
    shutil.copy(sample.path, os.path.join(new_dir, "p0003-00000000000000000900-00000000000000000901-1of1.parquet"))
    shutil.rmtree(os.path.dirname(store.marker_path(T0)))  # a settled hour: never listed again
    again = store.files()
    assert {f.hour_ms for f in again} == {T0, T0 + HOUR_MS, later}
    assert {f.path for f in first} <= {f.path for f in again}, "settled hours come from the first listing"
    assert store.complete_hours() == {T0, T0 + HOUR_MS}
    assert BronzeStore(settings.lake_root).complete_hours() == {T0 + HOUR_MS}  # a new store looks again
