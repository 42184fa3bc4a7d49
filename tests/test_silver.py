"""``lake silver``: Bronze hours -> silver/telemetry and silver/quarantine (see lake_scenario)."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake.cli import main
from lake_core.errors import ConfigError
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.geohash import encode
from support import lake_scenario as sc
from support.bronze_builder import SECOND, BronzeBuilder, ms


def silver_rows(root: str) -> dict:
    table = delta_dataset(LakePaths(root).table("silver_telemetry")).to_table()
    return {(r["vehicle_id"], r["event_id"]): r for r in table.to_pylist()}


def quarantine_rows(root: str, hour: str | None = None) -> list:
    rows = delta_dataset(LakePaths(root).table("silver_quarantine")).to_table().to_pylist()
    return [r for r in rows if hour is None or r["bronze_hour"] == hour]


def versions(root: str) -> tuple:
    paths = LakePaths(root)
    return tuple(
        DeltaTable(paths.table(t)).version() if DeltaTable.is_deltatable(paths.table(t)) else None
        for t in ("silver_telemetry", "silver_quarantine")
    )


def silver(root: str, hour: str, **kw):
    return run_silver(SilverOptions(root, hour, gate=kw.pop("gate", False), **kw))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """The scenario's lake after Silver ran hour 08, then hour 09."""
    root = str(tmp_path_factory.mktemp("silver") / "lake")
    sc.build(root)
    reports = {sc.H08: silver(root, sc.H08), sc.H09: silver(root, sc.H09)}
    return root, reports


@pytest.fixture
def lake_copy(lake, tmp_path):
    root = str(tmp_path / "lake")
    shutil.copytree(lake[0], root)
    return root


def test_one_row_per_event(lake):
    root, _ = lake
    rows = silver_rows(root)
    assert set(rows) == sc.SILVER_KEYS
    table = delta_dataset(LakePaths(root).table("silver_telemetry")).to_table()
    assert table.num_rows == len(sc.SILVER_KEYS)


def test_first_ingested_wins(lake):
    rows = silver_rows(lake[0])
    e1, e3, e5, e8 = (rows[("V1", e)] for e in ("e1", "e3", "e5", "e8"))
    assert e1["kafka_offset"] == 0  # the identical redelivery came later
    assert (e3["soc_pct"], e3["kafka_partition"]) == (11.0, 0)  # same ingest time: the lower partition
    assert e5["soc_pct"] is None  # the differing copy (soc 99) was ingested later
    assert e8["lat"] == 53.001  # hour 09's differing redelivery (lat 60) is a duplicate
    assert rows[("V1", "e2")]["ingest_ts"].timestamp() * 1000 == ms("08:00:11")


def test_server_side_time_correction(lake):
    rows = silver_rows(lake[0])
    for event_id, (event_ms, corrected) in sc.V2_TIMES.items():
        row = rows[("V2", event_id)]
        assert (row["event_ts"].timestamp() * 1000, row["ts_corrected"]) == (event_ms, corrected), event_id
    assert str(rows[("V2", "k4")]["event_date"]) == "2026-02-23"
    assert str(rows[("V2", "k2")]["event_date"]) == "2026-03-01"
    assert not rows[("V1", "e1")]["ts_corrected"]


def test_enrichment(lake):
    rows = silver_rows(lake[0])
    assert rows[("V3", "v3a")]["vehicle_type"] == "unknown"
    assert rows[("S2", f"S2:soc:{ms('08:20:00')}")]["vehicle_type"] == "unknown"
    assert rows[("V1", "e1")]["vehicle_type"] == "scooter"
    assert rows[("S1", f"S1:soc:{sc.S1_T0}")]["vehicle_type"] == "ebike"
    assert rows[("V3", "v3a")]["zone_id"] == encode([52.1], [13.1], 6)[0]
    assert rows[("V1", "e7")]["zone_id"] is None  # no position
    assert rows[("S1", f"S1:soc:{sc.S1_T0}")]["zone_id"] is None


def test_both_shapes_and_paired_signal_positions(lake):
    rows = silver_rows(lake[0])
    e1 = rows[("V1", "e1")]
    assert (e1["source_shape"], e1["schema_version"], e1["alt_m"], e1["in_use"], e1["trip_id"]) == (
        "snapshot",
        1,
        30.0,
        True,
        "T1",
    )
    position = rows[("S1", f"S1:lat:{sc.S1_T0}")]
    assert (position["lat"], position["lon"], position["source_shape"], position["schema_version"]) == (
        52.5,
        13.4,
        "signal",
        None,
    )
    assert position["zone_id"] == encode([52.5], [13.4], 6)[0]
    assert ("S1", f"S1:lon:{sc.S1_T0}") not in rows  # folded into the position
    assert rows[("S1", f"S1:ignition:{sc.S1_T0}")]["ignition"] is True
    assert rows[("S1", f"S1:charging:{sc.S1_T0}")]["charging"] is False
    assert rows[("S1", f"S1:soc:{sc.S1_T0}")]["soc_pct"] == 80.0
    assert rows[("S1", f"S1:odometer:{sc.S1_T0}")]["odometer_km"] == 100.5
    assert rows[("S1", f"S1:battery_temp:{sc.S1_T0}")]["battery_temp_c"] == 20.0


def test_quarantine_reasons_and_bronze_coordinates(lake):
    root, _ = lake
    q08 = quarantine_rows(root, sc.H08)
    assert {(r["event_id"], r["reason"]) for r in q08} == sc.QUARANTINE_08
    assert {(r["event_id"], r["reason"]) for r in quarantine_rows(root, sc.H09)} == sc.QUARANTINE_09
    q1 = next(r for r in q08 if r["event_id"] == "q1")
    assert json.loads(q1["payload"])["location"]["lat"] == 95.0
    assert q1["vehicle_type"] == "unknown" and q1["zone_id"] is None
    bronze_file = f"{LakePaths(root).bronze_hour(sc.ms('08:00:00'))}/{q1['bronze_file']}"
    original = pq.read_table(bronze_file).to_pylist()
    assert any(r["kafka_offset"] == q1["kafka_offset"] and r["payload"] == q1["payload"] for r in original)
    malformed = next(r for r in q08 if r["reason"] == "malformed_payload")
    assert (malformed["payload"], malformed["vehicle_id"], malformed["kafka_partition"]) == ("[1, 2, 3]", "V3", 6)


def test_report_counts_every_bronze_row(lake):
    _, reports = lake
    for report in reports.values():
        accounted = (
            report.silver_candidates + sum(report.quarantined.values()) + report.duplicates + report.positions_paired
        )
        assert accounted == report.bronze_rows
    h08, h09 = reports[sc.H08], reports[sc.H09]
    assert h08.quarantined == {"invalid_gps": 5, "invalid_soc": 2, "invalid_speed": 1, "malformed_payload": 1}
    assert h08.duplicates == 4  # e1, e3, e5, S1's lat at 08:00:30
    assert h09.already_in_silver == 2  # e2, e8 (days later they would be too)
    assert h09.duplicates == 1  # the lon whose position Silver holds
    assert h09.inserted == 2
    assert h08.ts_corrected == 2 and h08.bronze_files == 7


def test_rerun_changes_nothing(lake_copy):
    before = versions(lake_copy)
    rows_before = silver_rows(lake_copy)
    for hour in (sc.H08, sc.H09):
        report = silver(lake_copy, hour)
        assert report.inserted == 0 and report.quarantine_commits == 0
    assert versions(lake_copy) == before
    assert silver_rows(lake_copy) == rows_before


def test_cli_prints_a_summary(lake_copy, capsys):
    assert main(["silver", "--hour", sc.H08, "--lake-root", lake_copy, "--no-gate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("silver 2026-03-01T08: ") and "0 new silver rows" in out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_missing_hour_is_a_clear_error(lake_copy, capsys):
    before = versions(lake_copy)
    assert main(["silver", "--hour", "2026-03-01T11", "--lake-root", lake_copy]) == 4
    err = _one_line_error(capsys)
    assert "no Bronze data for hour 2026-03-01T11" in err and "2026-03-01T08" in err
    assert versions(lake_copy) == before


def test_bad_hour_flag_exits_2(lake_copy, capsys):
    assert main(["silver", "--hour", "2026-03-01 8h", "--lake-root", lake_copy]) == 2
    assert "expected YYYY-MM-DDTHH" in _one_line_error(capsys)


def _new_hour(root: str, hour_text: str) -> list:
    b = BronzeBuilder(root)
    t = ms(hour_text)
    for i in range(50):
        b.snapshot(
            "V1",
            f"x{i}",
            t + i * SECOND,
            t + i * SECOND + 10,
            location={"lat": 52.0, "lon": 13.0},
            battery={"soc_pct": 50.0},
            status={"in_use": True, "trip_id": "T" * 200},
        )
    b.snapshot("V2", "y0", t, t + 10, partition=1)
    return b.write()


def test_truncated_file_is_a_clear_error_and_nothing_changes(lake_copy, capsys):
    files = _new_hour(lake_copy, "10:00:00")
    with open(files[0], "r+b") as f:
        f.truncate(os.path.getsize(files[0]) // 2)
    before = versions(lake_copy)
    assert main(["silver", "--hour", "2026-03-01T10", "--lake-root", lake_copy]) == 4
    err = _one_line_error(capsys)
    assert "corrupt or truncated" in err and os.path.basename(files[0]) in err
    assert versions(lake_copy) == before


def test_corrupt_data_page_fails_inside_the_pipeline_and_nothing_changes(lake_copy, capsys):
    files = _new_hour(lake_copy, "10:00:00")
    size = os.path.getsize(files[0])
    with open(files[0], "r+b") as f:  # keep the footer, garble the column chunks
        f.seek(4)
        f.write(os.urandom(size // 2))
    before = versions(lake_copy)
    assert main(["silver", "--hour", "2026-03-01T10", "--lake-root", lake_copy, "--no-gate"]) == 4
    err = _one_line_error(capsys)
    assert "corrupt or truncated" in err and os.path.basename(files[0]) in err and "while running" not in err
    assert versions(lake_copy) == before
    assert not os.listdir(os.path.join(lake_copy, "_staging", "silver"))


def test_marker_naming_a_missing_file_is_an_error(lake_copy, capsys):
    files = _new_hour(lake_copy, "10:00:00")
    os.remove(files[1])
    assert main(["silver", "--hour", "2026-03-01T10", "--lake-root", lake_copy]) == 4
    assert "names 1 file(s) that are missing" in _one_line_error(capsys)


def test_open_hour_is_processed_unless_completeness_is_required(lake_copy, capsys):
    _new_hour(lake_copy, "10:00:00")
    os.remove(f"{LakePaths(lake_copy).bronze_hour(ms('10:00:00'))}/_COMPLETE")
    assert main(["silver", "--hour", "2026-03-01T10", "--lake-root", lake_copy, "--require-complete"]) == 4
    assert "not complete" in _one_line_error(capsys)
    report = silver(lake_copy, "2026-03-01T10")
    assert report.inserted == 51 and not report.complete


def test_silver_table_of_another_schema_is_refused(tmp_path, capsys):
    root = str(tmp_path / "lake")
    _new_hour(root, "10:00:00")
    old = pa.table({"vehicle_id": ["V1"], "event_id": ["a"], "event_date": pa.array([dt.date(2026, 3, 1)])})
    write_deltalake(LakePaths(root).table("silver_telemetry"), old, partition_by=["event_date"])
    assert main(["silver", "--hour", "2026-03-01T10", "--lake-root", root]) == 4
    err = _one_line_error(capsys)
    assert "another schema" in err and "missing event_ts" in err
    assert DeltaTable(LakePaths(root).table("silver_telemetry")).version() == 0
    assert not DeltaTable.is_deltatable(LakePaths(root).table("silver_quarantine"))


def _two_hours(root: str) -> None:
    """Hours 10 and 11, both on 2026-03-01, with one event delivered in both."""
    b = BronzeBuilder(root)
    for hour in ("10", "11"):
        t = ms(f"{hour}:00:00")
        for i in range(40):
            b.snapshot(
                f"W{i % 4}",
                f"{hour}-{i}",
                t + i * SECOND,
                t + i * SECOND + 5,
                partition=i % 4,
                location={"lat": 50.0 + i / 1000, "lon": 8.0},
            )
        b.snapshot("W0", "shared", ms("10:30:00"), t + 50 * SECOND, partition=0, location={"lat": 50.0, "lon": 8.0})
    b.write()


def test_two_hours_at_once_both_land(tmp_path):
    """Two `lake silver` processes of different hours racing for the same partition."""
    root = str(tmp_path / "lake")
    _two_hours(root)
    env = {**os.environ, "LAKE_ROOT": root}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lake.cli", "silver", "--hour", f"2026-03-01T{h}", "--no-gate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in ("10", "11")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows = silver_rows(root)
    assert len(rows) == 81 and ("W0", "shared") in rows


def test_concurrent_commits_retry_and_never_lose_rows(tmp_path):
    """Four commits of different hours in threads: every one lands after retries, none twice."""
    from beam_pipelines.silver.clean import clean_batch
    from beam_pipelines.silver.commit import commit_hour
    from beam_pipelines.silver.parse import parse_bronze
    from lake_core.bronze.hour_files import list_bronze_hour, read_bronze_file

    root = str(tmp_path / "lake")
    b = BronzeBuilder(root)
    hours = ("10", "11", "12", "13")
    for hour in hours:
        t = ms(f"{hour}:00:00")
        for i in range(30):
            b.snapshot("W1", f"{hour}-{i}", t + i * SECOND, t + i * SECOND + 5, location={"lat": 50.0, "lon": 8.0})
        b.snapshot("W1", "bad", t, t + 5, battery={"soc_pct": 500.0})  # one quarantine row per hour
    b.write()
    batches = {}
    for hour in hours:
        listing = list_bronze_hour(root, ms(f"{hour}:00:00"))
        parsed = pa.concat_tables(
            [parse_bronze(read_bronze_file(root, f"{listing.directory}/{n}"), n) for n in listing.files]
        )
        batches[listing.hour] = clean_batch(
            parsed,
            pa.table(
                {"vehicle_id": [], "vehicle_type": []},
                schema=pa.schema([("vehicle_id", pa.string()), ("vehicle_type", pa.string())]),
            ),
            listing.hour,
        )
    errors = []

    def commit(hour):
        try:
            commit_hour(root, batches[hour], hour)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(h,)) for h in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(silver_rows(root)) == 4 * 30  # "bad" is quarantined in each hour; every other event once
    assert sorted(r["bronze_hour"] for r in quarantine_rows(root)) == sorted(batches)


def test_a_gate_in_chunks_publishes_the_same_silver(lake, tmp_path, monkeypatch):
    """The commit hands the gate the hour's staged shards in chunks of CHUNK_ROWS rows (here a few),
    validated one after the other: Silver is the same as the fixture's, and each chunk is a validation."""
    from beam_pipelines.silver import commit

    monkeypatch.setattr(commit, "CHUNK_ROWS", 5)
    root = str(tmp_path / "lake")
    sc.build(root)
    for hour in (sc.H08, sc.H09):
        silver(root, hour, gate=True, max_quarantine_rate=0.5)
    assert silver_rows(root) == silver_rows(lake[0])
    runs = {os.path.basename(p) for p in glob.glob(f"{root}/_quality/gx/uncommitted/validations/silver_telemetry/*")}
    assert runs == {f"{sc.H08} part {i} of 4" for i in (1, 2, 3, 4)} | {sc.H09}  # H09: 5 rows, one chunk


def test_a_merge_beyond_its_memory_bound_runs_again_unbounded(tmp_path, monkeypatch, caplog):
    """LAKE_MERGE_MEMORY_MB bounds what the MERGE holds; the join's table of the rows it matches cannot
    spill, so a MERGE too large for the bound runs again without it (a warning) and publishes the same."""
    import logging

    import numpy as np

    from beam_pipelines.silver.clean import WORK_QUARANTINE_SCHEMA, CleanBatch
    from beam_pipelines.silver.commit import commit_hour
    from benchmarks.merge_growth import filler_rows

    root, day = str(tmp_path / "lake"), dt.date(2026, 3, 1)

    filler = filler_rows(0, 250_000, day, 1, np.random.default_rng(1))

    def batch(first: int, rows: int) -> CleanBatch:
        silver = filler.slice(first, rows)
        return CleanBatch(silver, WORK_QUARANTINE_SCHEMA.empty_table(), frozenset([day]), {"bronze_rows": rows})

    commit_hour(root, batch(0, 200_000), "2026-03-01T10")
    monkeypatch.setenv("LAKE_MERGE_MEMORY_MB", "1")
    with caplog.at_level(logging.WARNING, logger="beam_pipelines.silver.commit"):
        result = commit_hour(root, batch(150_000, 100_000), "2026-03-01T11")
    assert "needs more than LAKE_MERGE_MEMORY_MB: running it unbounded" in caplog.text
    assert (result.inserted, result.already_in_silver) == (50_000, 50_000)
    assert len(silver_rows(root)) == 250_000
    monkeypatch.setenv("LAKE_MERGE_MEMORY_MB", "lots")
    with pytest.raises(ConfigError, match="LAKE_MERGE_MEMORY_MB must be a number of megabytes"):
        commit_hour(root, batch(0, 10), "2026-03-01T12")
