"""``lake forget --vehicle V``: one vehicle erased from every layer, everything else kept, audited.

The lake: ``lake_scenario`` (Bronze hours 08 and 09 of 2026-03-01, real
Silver and Gold runs) plus one ingest group of Kafka partition 7 in hour 08
(a Bronze file and a rejects file) with rows that are V1's only by their
payload, and rows that mention V1 but are not V1's. V1 is registered, has
Silver, quarantine, Gold hourly, state and zone rows, and rejects.
"""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from beam_pipelines.gold.options import GoldOptions
from beam_pipelines.gold.pipeline import run_gold
from beam_pipelines.ingest.bronze_state import WATERMARK_KEY, BronzeStore
from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake.cli import main
from lake.lifecycle.audit import read_records
from lake.lifecycle.forget import forget_vehicle
from lake.query import query
from lake_schemas import LakePaths
from support import lake_scenario as sc
from support.bronze_builder import SECOND, ms
from support.lifecycle_helpers import (
    DELTA_TABLES,
    copy_lake,
    parquet_files,
    rows,
    run_layers,
    tree,
    versions,
    write_group,
)

V = "V1"
TOPIC = "vehicle-telemetry"
H08, H09 = ms("08:00:00"), ms("09:00:00")
PARTITIONS = 8
ALL_TABLES = ["bronze_telemetry", "bronze_rejects", *DELTA_TABLES]


def _row(offset: int, payload: str, vehicle_id, key, t: int, **extra) -> dict:
    return {
        "kafka_topic": TOPIC,
        "kafka_partition": 7,
        "kafka_offset": offset,
        "ingest_ts": t + SECOND,
        "key": key,
        "payload": payload,
        "vehicle_id": vehicle_id,
        "event_ts": t if vehicle_id else None,
        **extra,
    }


def _snapshot(vehicle_id: str, event_id: str, t: int, **groups) -> str:
    return json.dumps({"schema_version": 1, "event_id": event_id, "vehicle_id": vehicle_id, "ts": t, **groups})


def build(root: str) -> None:
    sc.build(root)
    t = ms("08:05:00")
    bronze = [
        _row(0, _snapshot(V, "e11", t, location={"lat": 95.0, "lon": 13.0}), V, V, t),  # quarantined, V1's
        _row(1, '{"vehicle_id": "V1", "event_id": 7}', None, None, t),  # quarantined, V1's by its payload
        _row(2, '{"vehicle_id": "V10", "event_id": 7}', None, None, t),  # V10 is not V1
        _row(3, _snapshot("V2", "k5", t, location={"lat": 48.0, "lon": 11.0}, status={"trip_id": V}), "V2", "V2", t),
    ]
    reason = {"reason_detail": "test"}
    rejects = [
        _row(4, '{"vehicle_id": "V1", "event_id": ""}', V, V, t, reason="invalid_event_id", **reason),
        _row(5, '{"vehicle_id": "V1", "ts": ', None, None, t, reason="not_json", **reason),  # V1's by payload
        _row(6, '{"vehicle_id": "V10"', None, None, t, reason="not_json", **reason),
        _row(7, '{"did": "V1", "name": "warp"}', None, "V2", t, reason="unknown_shape", **reason),  # V2's key
    ]
    write_group(root, 7, H08, bronze, rejects, watermark_ms=ms("08:59:00"))
    for hour in (H08, H09):  # markers as the ingest writes them (rows and offsets per file)
        os.remove(LakePaths(root).complete_marker(hour))
    BronzeStore(root).close_hours(PARTITIONS, 0, drained=True)
    run_layers(root)


def is_v1(row: dict) -> bool:
    """The erasure rule, written out once more in plain Python for the checks."""
    if row.get("vehicle_id") == V or row.get("key") == V:
        return True
    unknown = row.get("vehicle_id") is None and row.get("key") is None
    return unknown and f'"{V}"' in (row.get("payload") or "")


def bronze_rows(root: str, table: str) -> list:
    data = query(f"SELECT * EXCLUDE (year, month, day, hour) FROM {table}", root).to_pylist()
    return sorted(data, key=lambda r: (r["kafka_partition"], r["kafka_offset"]))


def count(root: str, table: str, condition: str) -> int:
    """Rows of ``table`` meeting ``condition``, through ``lake.query`` (as an analyst would count them).

    A FILTER clause rather than WHERE: DuckDB pushes a WHERE on a string column into
    the Arrow dataset, which fails on deltalake's string_view columns (pyarrow 25).
    """
    return query(f"SELECT count(*) FILTER (WHERE {condition}) AS n FROM {table}", root).to_pylist()[0]["n"]


def snapshot(root: str) -> dict:
    found = {t: bronze_rows(root, t) for t in ("bronze_telemetry", "bronze_rejects")}
    found.update({t: rows(root, t) for t in DELTA_TABLES})
    return found


def markers(root: str) -> dict:
    out = {}
    for hour in (H08, H09):
        with open(LakePaths(root).complete_marker(hour)) as f:
            out[hour] = json.load(f)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("forget") / "lake")
    build(root)
    return root


@pytest.fixture(scope="module")
def forgotten(built, tmp_path_factory):
    """A copy of the lake after ``forget_vehicle(V1)``, with what it held before."""
    root = copy_lake(built, str(tmp_path_factory.mktemp("forgotten") / "lake"))
    store = BronzeStore(root)
    before = {
        "rows": snapshot(root),
        "state": store.state(PARTITIONS),
        "markers": markers(root),
        "files": sorted(f.path for f in store.files()),
    }
    lines = []
    os.environ["USER"], user = "dpo-test", os.environ.get("USER")
    try:
        report = forget_vehicle(root, V, reason="ticket 4711", progress=lines.append)
    finally:
        if user is None:
            del os.environ["USER"]
        else:
            os.environ["USER"] = user
    return root, report, before, lines


def test_the_lake_holds_v1_everywhere_before(built):
    # The checks below would prove nothing if V1 were not in every table to begin with.
    data = snapshot(built)
    for table in ALL_TABLES:
        if table == "gold_zone_hourly":
            continue  # no vehicle column: checked by recomputation
        assert any(is_v1(r) for r in data[table]), table
    assert sum(1 for r in data["silver_quarantine"] if r["vehicle_id"] is None and is_v1(r)) == 1
    assert sum(1 for r in data["bronze_rejects"] if r["vehicle_id"] is None and is_v1(r)) == 1


def test_every_row_of_the_vehicle_is_gone(forgotten):
    root, report, before, _ = forgotten
    for table in ALL_TABLES:
        if table == "gold_zone_hourly":
            continue
        assert count(root, table, "vehicle_id = 'V1'") == 0, table
    assert count(root, "bronze_rejects", "vehicle_id IS NULL AND key IS NULL AND payload LIKE '%\"V1\"%'") == 0
    assert count(root, "silver_quarantine", "vehicle_id IS NULL AND payload LIKE '%\"V1\"%'") == 0
    assert report.rows_deleted == sum(sum(map(is_v1, before["rows"][t])) for t in ALL_TABLES if t != "gold_zone_hourly")


def test_every_other_row_is_kept_unchanged(forgotten):
    root, _, before, _ = forgotten
    after = snapshot(root)
    for table in ALL_TABLES:
        if table == "gold_zone_hourly":
            continue
        assert after[table] == [r for r in before["rows"][table] if not is_v1(r)], table
    # Rows that mention V1 but are someone else's stayed.
    kept = {r["payload"] for r in after["bronze_rejects"]}
    assert '{"did": "V1", "name": "warp"}' in kept and '{"vehicle_id": "V10"' in kept
    assert any(r["trip_id"] == V and r["vehicle_id"] == "V2" for r in after["silver_telemetry"])


def test_per_table_counts_match_what_the_tables_held(forgotten):
    _, report, before, _ = forgotten
    for table in ALL_TABLES:
        if table == "gold_zone_hourly":
            continue
        assert report.table(table).rows_deleted == sum(map(is_v1, before["rows"][table])), table
    # Hour 08: Kafka partitions 0, 1 and 7; hour 09: partition 0. Rejects: partition 7's file.
    assert report.table("bronze_telemetry").files_rewritten == 4
    assert report.table("bronze_rejects").files_rewritten == 1
    assert report.table("dims_vehicles").rows_deleted == 1


def test_zone_hourly_is_recomputed_without_the_vehicle(forgotten):
    root, report, before, _ = forgotten
    after = rows(root, "gold_zone_hourly")
    v1_hours = {ms("08:00:00"), ms("09:00:00")}

    def hour(r):
        return int(r["hour_start"].timestamp() * 1000)

    # Hours V1 was not active in (2026-02-23) are untouched.
    assert [r for r in after if hour(r) not in v1_hours] == [
        r for r in before["rows"]["gold_zone_hourly"] if hour(r) not in v1_hours
    ]
    # V1's hours are what Silver, without V1, says.
    expected = query(
        """
        SELECT zone_id, date_trunc('hour', event_ts) AS hour_start, count(DISTINCT vehicle_id) AS active_vehicles,
               count(*) AS event_count, avg(soc_pct) AS soc_avg
        FROM silver_telemetry WHERE zone_id IS NOT NULL GROUP BY 1, 2""",
        root,
    ).to_pylist()
    expected = {(r["zone_id"], int(r["hour_start"].timestamp() * 1000)): r for r in expected}
    got = {(r["zone_id"], hour(r)): r for r in after if hour(r) in v1_hours}
    assert set(got) == {k for k in expected if k[1] in v1_hours}
    for key, row in got.items():
        assert (row["active_vehicles"], row["event_count"]) == (
            expected[key]["active_vehicles"],
            expected[key]["event_count"],
        ), key
        assert row["soc_avg"] == pytest.approx(expected[key]["soc_avg"], nan_ok=True), key
    # Zone-hours V1 was alone in are gone.
    gone = len(before["rows"]["gold_zone_hourly"]) - len(after)
    assert gone > 0 and report.table("gold_zone_hourly").rows_deleted == gone
    assert report.table("gold_zone_hourly").zone_hours_recomputed == 2


def test_gold_run_again_agrees_with_the_recomputation(forgotten, tmp_path):
    root = copy_lake(forgotten[0], str(tmp_path / "lake"))
    recomputed = rows(root, "gold_zone_hourly")
    hourly = rows(root, "gold_vehicle_hourly")
    run_gold(GoldOptions(root, "2026-03-01", gate=False))
    assert rows(root, "gold_zone_hourly") == recomputed
    assert rows(root, "gold_vehicle_hourly") == hourly


def test_data_is_physically_gone_from_every_delta_file(forgotten):
    root = forgotten[0]
    for table in DELTA_TABLES:
        for path in parquet_files(LakePaths(root).table(table)):
            data = pq.read_table(path)
            if "vehicle_id" in data.column_names:
                assert V not in data["vehicle_id"].to_pylist(), path
            if "payload" in data.column_names:
                assert not any(is_v1(r) for r in data.select(["vehicle_id", "payload"]).to_pylist()), path
    for table in ("bronze_telemetry", "bronze_rejects"):
        for path in parquet_files(LakePaths(root).table(table)):
            assert not any(is_v1(r) for r in pq.read_table(path).to_pylist()), path


def test_bronze_checkpoint_still_works(forgotten):
    root, _, before, _ = forgotten
    store = BronzeStore(root)
    assert sorted(f.path for f in store.files()) == before["files"]  # no file deleted or renamed
    assert store.recover() == []  # every group complete: the ingest deletes nothing and re-reads nothing
    state = store.state(PARTITIONS)
    assert state.next_offsets == before["state"].next_offsets
    assert state.watermarks == before["state"].watermarks
    assert state.watermarks[7] == ms("08:59:00")  # read from the rewritten file's metadata
    assert state.complete_hours == before["state"].complete_hours


def test_an_emptied_file_stays_with_its_schema(forgotten):
    root = forgotten[0]
    hour08 = f"{LakePaths(root).bronze}/year=2026/month=03/day=01/hour=08"
    only_v1 = [n for n in os.listdir(hour08) if n.startswith("p0001-")]
    assert len(only_v1) == 1  # the scenario's lone copy of V1's e3
    emptied = pq.read_table(f"{hour08}/{only_v1[0]}")
    assert emptied.num_rows == 0
    assert emptied.schema.remove_metadata().equals(
        pq.read_table(f"{hour08}/p0000-{'0' * 20}-{9:020d}-1of1.parquet").schema.remove_metadata()
    )
    assert not [n for n in os.listdir(hour08) if n.endswith(".inprogress")]


def test_markers_count_what_is_left_and_what_was_erased(forgotten):
    root, report, before, _ = forgotten
    after = markers(root)
    erased = 0
    for hour, marker in after.items():
        old = {(e["table"], e["file"]): e for e in before["markers"][hour]["files"]}
        assert [(e["table"], e["file"]) for e in marker["files"]] == list(old)
        for entry in marker["files"]:
            assert entry["rows"] + entry.get("erased_rows", 0) == old[(entry["table"], entry["file"])]["rows"]
            erased += entry.get("erased_rows", 0)
        assert marker["rows"] == sum(e["rows"] for e in marker["files"])
    assert erased == report.table("bronze_telemetry").rows_deleted + report.table("bronze_rejects").rows_deleted


def test_silver_run_again_does_not_bring_the_vehicle_back(forgotten, tmp_path):
    root = copy_lake(forgotten[0], str(tmp_path / "lake"))
    silver = rows(root, "silver_telemetry")
    for hour in (sc.H08, sc.H09):
        run_silver(SilverOptions(root, hour, gate=False))
    assert rows(root, "silver_telemetry") == silver
    assert count(root, "silver_quarantine", "vehicle_id = 'V1'") == 0


def test_audit_line_records_what_was_done(forgotten):
    root, report, _, lines = forgotten
    [record] = read_records(root, "forget")
    assert record["vehicle_id"] == V and record["reason"] == "ticket 4711"
    assert record["requested_by"] == "dpo-test"  # env USER
    assert record["ts"].endswith("Z") and record["dry_run"] is False
    assert record["rows_deleted"] == report.rows_deleted > 0
    assert {t: v["rows_deleted"] for t, v in record["tables"].items()} == {
        t.table: t.rows_deleted for t in report.tables
    }
    assert record["tables"]["silver_telemetry"]["version_after"] == versions(root)["silver_telemetry"]
    assert record["tables"]["bronze_telemetry"]["files_rewritten"] == report.table("bronze_telemetry").files_rewritten
    assert any("bronze" in line for line in lines)  # progress was reported


def test_forgetting_twice_deletes_nothing_and_is_audited(forgotten, tmp_path):
    root = copy_lake(forgotten[0], str(tmp_path / "lake"))
    files, delta_versions = tree(root), versions(root)
    report = forget_vehicle(root, V, reason="again", requested_by="ops", progress=lambda _: None)
    assert report.rows_deleted == 0
    assert versions(root) == delta_versions  # no commit at all
    changed = {p for p in set(files) | set(tree(root)) if files.get(p) != tree(root).get(p)}
    assert changed == {"_audit/forget.jsonl"}
    records = read_records(root, "forget")
    assert len(records) == 2 and records[1]["rows_deleted"] == 0 and records[1]["requested_by"] == "ops"


def test_dry_run_counts_the_same_and_changes_nothing(built, forgotten, tmp_path):
    root = copy_lake(built, str(tmp_path / "lake"))
    files = tree(root)
    report = forget_vehicle(root, V, dry_run=True, progress=lambda _: None)
    assert tree(root) == files  # no audit line either
    real = forgotten[1]
    assert {t.table: t.rows_deleted for t in report.tables} == {t.table: t.rows_deleted for t in real.tables}
    assert report.table("bronze_telemetry").files_rewritten == real.table("bronze_telemetry").files_rewritten
    assert "DRY RUN" in report.summary()


def test_unknown_vehicle_deletes_nothing_and_is_audited(built, tmp_path, capsys):
    root = copy_lake(built, str(tmp_path / "lake"))
    before = snapshot(root)
    assert main(["forget", "--lake-root", root, "--vehicle", "NOPE", "--reason", "test"]) == 0
    assert "deleted 0 rows" in capsys.readouterr().out
    assert snapshot(root) == before
    [record] = read_records(root, "forget")
    assert record["vehicle_id"] == "NOPE" and record["rows_deleted"] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vehicle", "V 1"], "not a vehicle id"),
        (["--vehicle", "V1'; DROP"], "not a vehicle id"),
        ([], "--vehicle"),
    ],
)
def test_bad_arguments_are_one_line_errors(built, capsys, argv, message):
    assert main(["forget", "--lake-root", built, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_lake_root_that_does_not_exist_is_a_clear_error(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert main(["forget", "--lake-root", missing, "--vehicle", V]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(missing)  # and nothing was created there


def test_watermark_metadata_survives_the_rewrite(forgotten):
    root = forgotten[0]
    hour08 = f"{LakePaths(root).bronze}/year=2026/month=03/day=01/hour=08"
    [name] = [n for n in os.listdir(hour08) if n.startswith("p0007-")]
    meta = pq.read_schema(f"{hour08}/{name}").metadata
    assert int(meta[WATERMARK_KEY]) == ms("08:59:00")


def test_a_corrupt_bronze_file_is_a_clear_error(built, tmp_path, capsys):
    root = copy_lake(built, str(tmp_path / "lake"))
    hour08 = f"{LakePaths(root).bronze}/year=2026/month=03/day=01/hour=08"
    with open(f"{hour08}/p0009-{0:020d}-{0:020d}-1of1.parquet", "wb") as f:
        f.write(b"not parquet")
    assert main(["forget", "--lake-root", root, "--vehicle", V]) == 4
    err = capsys.readouterr().err
    assert "bronze/telemetry" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert read_records(root, "forget") == []  # nothing claimed as done
