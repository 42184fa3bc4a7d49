"""``lake maintain``: retention, compaction, vacuum; dry runs; running twice; bad input.

Two lakes: a Bronze-only one whose ingest groups make retention keep some
expired hours (the ingest's checkpoint), and the scenario lake after real
Silver and Gold runs (Silver and Gold days 2026-02-23 and 2026-03-01).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from beam_pipelines.ingest.bronze_state import WATERMARK_KEY, BronzeStore
from lake.cli import main
from lake.lifecycle.audit import read_records
from lake.lifecycle.maintenance import maintain
from lake_core.errors import ConfigError
from lake_core.storage import delta_dataset
from lake_schemas import BRONZE_SCHEMA, BronzeFileName, LakePaths
from lake_schemas.paths import hour_partition
from support.bronze_builder import HOUR, SECOND, ms
from support.lifecycle_helpers import DELTA_TABLES, build_scenario_lake, copy_lake, rows, tree, versions, write_group

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def quiet(_line: str) -> None:
    pass


# ---------------------------------------------------------------------------
# Bronze retention and the ingest's checkpoint.
# ---------------------------------------------------------------------------
BRONZE_NOW = at("2026-03-10T00:30:00")  # with 5 days: hours ending by 2026-03-05T00:30 expire
PARTITIONS = 3


def _rows(partition: int, first: int, count: int, hour_ms: int, reject: bool = False) -> list:
    extra = {"reason": "not_json", "reason_detail": "test"} if reject else {}
    return [
        {
            "kafka_topic": "vehicle-telemetry",
            "kafka_partition": partition,
            "kafka_offset": first + i,
            "ingest_ts": hour_ms + i * SECOND,
            "key": "V1",
            "payload": "{}",
            "vehicle_id": "V1",
            "event_ts": hour_ms,
            **extra,
        }
        for i in range(count)
    ]


def _split_group(root: str, partition: int, first: int, parts: list) -> None:
    """One pass of ``partition`` whose Bronze files fall in several hours: ``parts`` = [(hour_ms, row count)]."""
    last = first + sum(n for _, n in parts) - 1
    offset = first
    for index, (hour_ms, n) in enumerate(parts, start=1):
        directory = f"{LakePaths(root).bronze}/{hour_partition(hour_ms)}"
        os.makedirs(directory, exist_ok=True)
        data = pa.Table.from_pylist(_rows(partition, offset, n, hour_ms), schema=BRONZE_SCHEMA)
        data = data.replace_schema_metadata({WATERMARK_KEY: str(hour_ms + HOUR).encode()})
        pq.write_table(data, f"{directory}/{BronzeFileName(partition, first, last, index, len(parts))}")
        offset += n


def build_bronze(root: str) -> None:
    """Expired hours 03-02T05, 03-03T10, 03-03T11, 03-04T23; kept 03-05T00, 03-05T02, 03-09T12."""
    h = lambda text: ms(f"2026-03-{text}:00:00")  # noqa: E731
    write_group(
        root,
        0,
        h("03T10"),
        _rows(0, 0, 2, h("03T10")),
        _rows(0, 2, 1, h("03T10"), reject=True),
        watermark_ms=h("03T11"),
    )
    write_group(root, 0, h("04T23"), _rows(0, 3, 2, h("04T23")), [], watermark_ms=h("05T00"))
    write_group(root, 0, h("05T00"), _rows(0, 5, 2, h("05T00")), [], watermark_ms=h("05T01"))
    write_group(root, 0, h("09T12"), _rows(0, 7, 2, h("09T12")), [], watermark_ms=h("09T13"))
    _split_group(root, 1, 0, [(h("03T11"), 2), (h("05T02"), 2)])  # one pass over an expired and a kept hour
    write_group(root, 1, h("09T12"), _rows(1, 4, 2, h("09T12")), [], watermark_ms=h("09T13"))
    write_group(root, 2, h("02T05"), _rows(2, 0, 3, h("02T05")), [], watermark_ms=h("02T06"))  # its only group
    BronzeStore(root).close_hours(PARTITIONS, 0, drained=True)


def bronze_hours(root: str) -> set:
    found = set()
    for table in ("bronze_telemetry", "bronze_rejects"):
        base = LakePaths(root).table(table)
        for directory, _, _files in os.walk(base):
            if os.path.basename(directory).startswith("hour="):
                found.add((table, os.path.relpath(directory, base)))
    return found


def _hour(text: str) -> str:
    d = at(text)
    return f"year={d:%Y}/month={d:%m}/day={d:%d}/hour={d:%H}"


@pytest.fixture(scope="module")
def bronze_lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bronze") / "lake")
    build_bronze(root)
    return root


@pytest.fixture
def bronze_copy(bronze_lake, tmp_path):
    return copy_lake(bronze_lake, str(tmp_path / "lake"))


def test_bronze_retention_deletes_expired_hours_except_what_the_ingest_needs(bronze_copy):
    root = bronze_copy
    store = BronzeStore(root)
    state_before = store.state(PARTITIONS)
    before = bronze_hours(root)
    report = maintain(root, now=BRONZE_NOW, bronze_days=5, progress=quiet)

    gone = {
        ("bronze_telemetry", _hour("2026-03-03T10")),
        ("bronze_rejects", _hour("2026-03-03T10")),
        ("bronze_telemetry", _hour("2026-03-04T23")),
    }
    assert before - bronze_hours(root) == gone
    assert bronze_hours(root) == before - gone
    assert not os.path.exists(f"{LakePaths(root).bronze}/year=2026/month=03/day=04")  # emptied day folder
    bronze, rejects = report.table("bronze_telemetry"), report.table("bronze_rejects")
    assert (bronze.partitions_removed, bronze.rows_removed) == (2, 4)
    assert (rejects.partitions_removed, rejects.rows_removed) == (1, 1)
    assert bronze.files_before - bronze.files_after == 2
    held = " ".join(bronze.held_back)
    assert "2026-03-02T05 (resume point of Kafka partition(s) 2)" in held
    assert "2026-03-03T11 (an ingest group spans a kept hour)" in held
    # The ingest starts as before: no incomplete group to delete, same resume offsets and watermarks.
    assert store.recover() == []
    state = store.state(PARTITIONS)
    assert state.next_offsets == state_before.next_offsets == {0: 9, 1: 6, 2: 3}
    assert state.watermarks == state_before.watermarks


def test_held_hours_go_once_their_group_has_expired(bronze_copy):
    root = bronze_copy
    maintain(root, now=BRONZE_NOW, bronze_days=5, progress=quiet)
    report = maintain(root, now=at("2026-03-12T00:00:00"), bronze_days=5, progress=quiet)  # cutoff 03-07T00
    left = {h for t, h in bronze_hours(root) if t == "bronze_telemetry"}
    assert left == {_hour("2026-03-02T05"), _hour("2026-03-09T12")}  # partition 2's resume point stays
    assert report.table("bronze_telemetry").partitions_removed == 3  # 03-03T11 with 03-05T02, and 03-05T00
    assert BronzeStore(root).recover() == []


def test_bronze_dry_run_and_second_run_change_nothing(bronze_copy):
    root = bronze_copy
    files = tree(root)
    dry = maintain(root, now=BRONZE_NOW, bronze_days=5, dry_run=True, progress=quiet)
    assert tree(root) == files
    real = maintain(root, now=BRONZE_NOW, bronze_days=5, progress=quiet)
    assert [(t.partitions_removed, t.rows_removed, t.files_after) for t in dry.tables[:2]] == [
        (t.partitions_removed, t.rows_removed, t.files_after) for t in real.tables[:2]
    ]
    files = tree(root)
    again = maintain(root, now=BRONZE_NOW, bronze_days=5, progress=quiet)
    assert again.rows_removed == 0
    assert {p for p in set(files) | set(tree(root)) if files.get(p) != tree(root).get(p)} == {
        "_audit/maintenance.jsonl"
    }


def test_a_corrupt_expired_bronze_file_is_a_clear_error_and_nothing_is_deleted(bronze_copy, capsys):
    root = bronze_copy
    corrupt = f"{LakePaths(root).bronze}/{_hour('2026-03-04T23')}/p0000-{0:020d}-{0:020d}-1of1.parquet"
    with open(corrupt, "wb") as f:  # an old group of partition 0: not a resume point, so its hour expires
        f.write(b"not parquet")
    files = tree(root)
    assert main(["maintain", "--lake-root", root, "--now", "2026-03-10T00:30:00Z", "--bronze-days", "5"]) == 4
    err = capsys.readouterr().err
    assert "p0000-" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert tree(root) == files


# ---------------------------------------------------------------------------
# Delta tables: retention, compaction, vacuum.
# ---------------------------------------------------------------------------
NOW = at("2026-03-06T12:00:00")  # silver 5 days: before 2026-03-01; gold 6 days: before 2026-02-28
LIMITS = {"bronze_days": 90, "silver_days": 5, "gold_days": 6}
KEEP_ALL = at("2026-03-02T00:00:00")  # with the default limits nothing expires


@pytest.fixture(scope="module")
def layers_lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("layers") / "lake")
    build_scenario_lake(root)
    return root


@pytest.fixture
def lake_copy(layers_lake, tmp_path):
    return copy_lake(layers_lake, str(tmp_path / "lake"))


def day(row) -> str:
    value = row.get("event_date")
    return str(value) if value is not None else ""


def test_delta_retention_drops_exactly_the_old_partitions(lake_copy):
    root = lake_copy
    before = {t: rows(root, t) for t in DELTA_TABLES}
    assert any(day(r) == "2026-02-23" for r in before["silver_telemetry"])  # else the test proves nothing
    report = maintain(root, now=NOW, progress=quiet, **LIMITS)
    for table in DELTA_TABLES:
        expected = [r for r in before[table] if day(r) != "2026-02-23"]
        assert rows(root, table) == expected, table
        assert report.table(table).rows_removed == len(before[table]) - len(expected), table
    assert report.table("silver_telemetry").partitions_removed == 1
    assert report.table("silver_telemetry").expires_before == "2026-03-01"
    assert report.table("gold_vehicle_hourly").expires_before == "2026-02-28"
    assert report.table("gold_vehicle_state").expires_before is None  # never expires
    assert len(rows(root, "gold_vehicle_state")) == len(before["gold_vehicle_state"]) > 0


@pytest.mark.parametrize(
    "now, days, expired",
    [
        ("2026-03-01T00:00:00", 6, 0),  # 02-23 ends 02-24T00:00, after the cutoff 02-23T00:00: kept
        ("2026-03-02T00:00:00", 6, 1),  # cutoff 02-24T00:00: all of 02-23 is older
        ("2026-03-02T23:59:59", 1, 1),  # cutoff 03-01T23:59:59: 03-01 is not all older yet
        ("2026-03-03T00:00:00", 1, 2),  # cutoff 03-02T00:00: 03-01 has ended, both days go
    ],
)
def test_a_day_expires_only_once_all_of_it_is_older_than_the_limit(layers_lake, now, days, expired):
    report = maintain(layers_lake, now=at(now), silver_days=days, dry_run=True, progress=quiet)
    assert report.table("silver_telemetry").partitions_removed == expired


def test_compaction_reduces_files_and_keeps_rows(lake_copy):
    root = lake_copy
    before = {t: rows(root, t) for t in DELTA_TABLES}
    report = maintain(root, now=KEEP_ALL, progress=quiet)
    silver = report.table("silver_telemetry")
    assert silver.files_after < silver.files_before
    assert silver.files_after == len(DeltaTable(LakePaths(root).table("silver_telemetry")).file_uris())
    for table in DELTA_TABLES:
        assert rows(root, table) == before[table], table
        assert report.table(table).rows_removed == 0


def _orphan(root: str, table: str, name: str, age_hours: float) -> str:
    """A data file no commit references, as a commit that lost its race leaves behind."""
    path = LakePaths(root).table(table)
    source = DeltaTable(path).file_uris()[0]
    target = f"{os.path.dirname(source)}/{name}"
    shutil.copy(source, target)
    when = time.time() - age_hours * 3600
    os.utime(target, (when, when))
    return target


def test_vacuum_removes_old_unreferenced_files_and_keeps_what_readers_may_need(lake_copy):
    root = lake_copy
    path = LakePaths(root).table("silver_telemetry")
    old = _orphan(root, "silver_telemetry", "part-00000-failed-commit-old.parquet", 200)
    young = _orphan(root, "silver_telemetry", "part-00000-failed-commit-young.parquet", 1)
    version_before = DeltaTable(path).version()
    report = maintain(root, now=KEEP_ALL, progress=quiet)
    assert not os.path.exists(old) and os.path.exists(young)
    assert report.table("silver_telemetry").files_vacuumed == 1
    # The files compaction just replaced stay for 168 h: a reader of the older version still works.
    old_version = DeltaTable(path, version=version_before)
    assert delta_dataset(path, table=old_version).to_table().num_rows == len(rows(root, "silver_telemetry"))


def test_forced_short_vacuum_removes_everything_unneeded(lake_copy):
    root = lake_copy
    path = LakePaths(root).table("silver_telemetry")
    young = _orphan(root, "silver_telemetry", "part-00000-failed-commit-young.parquet", 1)
    maintain(root, now=KEEP_ALL, progress=quiet)  # compaction leaves the replaced files for vacuum
    on_disk = len([n for d, _, f in os.walk(path) if "_delta_log" not in d for n in f if n.endswith(".parquet")])
    report = maintain(root, now=KEEP_ALL, vacuum_hours=0, force=True, progress=quiet)
    assert not os.path.exists(young)
    remaining = [n for d, _, f in os.walk(path) if "_delta_log" not in d for n in f if n.endswith(".parquet")]
    assert len(remaining) == len(DeltaTable(path).file_uris())  # only what the current version needs
    assert report.table("silver_telemetry").files_vacuumed == on_disk - len(remaining)


def test_dry_run_changes_nothing_and_predicts_the_real_run(lake_copy):
    root = lake_copy
    _orphan(root, "silver_telemetry", "part-00000-failed-commit-old.parquet", 200)
    files = tree(root)
    dry = maintain(root, now=NOW, dry_run=True, progress=quiet, **LIMITS)
    assert tree(root) == files
    assert "DRY RUN" in dry.summary()
    real = maintain(root, now=NOW, progress=quiet, **LIMITS)
    fields = ("partitions_removed", "rows_removed", "files_before", "files_after", "files_vacuumed")
    for d, r in zip(dry.tables, real.tables):
        assert [getattr(d, f) for f in fields] == [getattr(r, f) for f in fields], d.table


def test_second_run_changes_nothing(lake_copy):
    root = lake_copy
    _orphan(root, "silver_telemetry", "part-00000-failed-commit-old.parquet", 200)
    maintain(root, now=NOW, progress=quiet, **LIMITS)
    files, delta_versions = tree(root), versions(root)
    again = maintain(root, now=NOW, progress=quiet, **LIMITS)
    assert versions(root) == delta_versions
    assert {p for p in set(files) | set(tree(root)) if files.get(p) != tree(root).get(p)} == {
        "_audit/maintenance.jsonl"
    }
    assert again.rows_removed == 0 and again.files_vacuumed == 0
    assert all(t.files_before == t.files_after for t in again.tables)


def test_each_run_is_audited(lake_copy):
    root = lake_copy
    report = maintain(root, now=NOW, progress=quiet, **LIMITS)
    maintain(root, now=NOW, dry_run=True, progress=quiet, **LIMITS)  # a dry run writes nothing
    [record] = read_records(root, "maintenance")
    assert record["now"] == "2026-03-06T12:00:00Z" and record["ts"].endswith("Z")
    assert record["limits"] == {**LIMITS, "vacuum_hours": 168}
    silver = record["tables"]["silver_telemetry"]
    assert silver["rows_removed"] == report.table("silver_telemetry").rows_removed > 0
    assert silver["version_after"] == versions(root)["silver_telemetry"]
    assert set(record["tables"]) == {"bronze_telemetry", "bronze_rejects", *DELTA_TABLES}


def test_cli_prints_progress_and_the_summary(lake_copy, capsys):
    assert (
        main(
            [
                "maintain",
                "--lake-root",
                lake_copy,
                "--now",
                "2026-03-06T12:00:00Z",
                "--silver-days",
                "5",
                "--gold-days",
                "6",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "silver_telemetry: 1 partition(s) before 2026-03-01 deleted" in out
    assert "maintenance of" in out and "compaction" in out
    assert json.loads(open(f"{lake_copy}/_audit/maintenance.jsonl").readline())["limits"]["silver_days"] == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vacuum-hours", "1"], "under 168 h"),
        (["--bronze-days", "0"], "bronze_days must be"),
        (["--now", "yesterday"], "not an ISO 8601 time"),
        (["--silver-days", "x"], "invalid int value"),
        (["--vacuum-hours", "nan"], "invalid int value"),  # was parsed as a float, and NaN passed the 168 h guard
        (["--vacuum-hours", "nan", "--force"], "invalid int value"),
    ],
)
def test_bad_flags_are_one_line_errors_with_exit_2(layers_lake, capsys, argv, message):
    files = tree(layers_lake)
    assert main(["maintain", "--lake-root", layers_lake, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert tree(layers_lake) == files


@pytest.mark.parametrize("hours", [float("nan"), float("inf"), -1.0, "168"])
def test_vacuum_hours_that_are_no_number_of_hours_are_refused(layers_lake, hours):
    with pytest.raises(ConfigError, match="vacuum_hours must be a number of hours"):
        maintain(layers_lake, vacuum_hours=hours, force=True, dry_run=True)


def test_short_vacuum_explains_why_it_needs_force(layers_lake, capsys):
    assert main(["maintain", "--lake-root", layers_lake, "--vacuum-hours", "1"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "reader" in err and "in flight" in err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: str(tmp / "missing"), "does not exist"),
        (lambda tmp: str(tmp), "holds none of the lake's tables"),
    ],
)
def test_a_lake_root_that_is_no_lake_is_a_clear_error(tmp_path, capsys, make, message):
    root = make(tmp_path)
    assert main(["maintain", "--lake-root", root]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(f"{root}/_audit")


def test_now_must_be_timezone_aware(layers_lake):
    with pytest.raises(ConfigError, match="timezone-aware"):
        maintain(layers_lake, now=dt.datetime(2026, 3, 1), progress=quiet)
