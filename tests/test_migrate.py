"""``lake migrate``: a Silver an older version wrote (no lineage columns) is brought up to date in place."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake.cli import main
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.tables import LINEAGE_FIELDS, SILVER_SCHEMA
from support import lake_scenario as sc

LINEAGE = [f.name for f in LINEAGE_FIELDS]


def _age_silver(root: str) -> pa.Table:
    """Rewrite Silver as the version before lineage wrote it: the same rows without the lineage columns."""
    path = LakePaths(root).table("silver_telemetry")
    rows = delta_dataset(path).to_table()
    partitions = DeltaTable(path).metadata().partition_columns
    old = rows.drop_columns(LINEAGE)
    assert old.schema.names == SILVER_SCHEMA.names[: len(SILVER_SCHEMA) - len(LINEAGE)], "an older table is a prefix"
    shutil.rmtree(path)
    write_deltalake(path, old, partition_by=partitions)
    return old


@pytest.fixture
def old_lake(tmp_path):
    root = str(tmp_path / "lake")
    sc.build(root)
    run_silver(SilverOptions(root, sc.H08, gate=False))
    return root, _age_silver(root)


def test_an_old_silver_is_refused_then_migrated_in_place_and_used(old_lake, capsys):
    root, old = old_lake
    path = LakePaths(root).table("silver_telemetry")
    capsys.readouterr()
    assert main(["silver", "--hour", sc.H09, "--lake-root", root, "--no-gate"]) == 4
    err = capsys.readouterr().err
    assert "missing kafka_topic" in err and "lake migrate" in err

    assert main(["migrate", "--dry-run", "--lake-root", root]) == 0
    out = capsys.readouterr().out
    assert "silver_telemetry: would add kafka_topic (string)" in out and "sender_ts" in out
    assert DeltaTable(path).version() == 0, "a dry run changes nothing"

    assert main(["migrate", "--lake-root", root, "--format", "json"]) == 0
    done = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}
    assert done["silver_telemetry"]["state"] == "add columns" and done["silver_telemetry"]["add"] == LINEAGE
    assert done["silver_telemetry"]["version_after"] == 1
    assert done["silver_quarantine"]["state"] == "current"
    assert done["gold_vehicle_hourly"]["state"] == "missing"
    table = DeltaTable(path)
    assert table.version() == 1 and table.history(1)[0]["operation"] == "ADD COLUMN"
    migrated = delta_dataset(path).to_table()
    assert migrated.schema.names == SILVER_SCHEMA.names
    assert migrated.num_rows == old.num_rows
    assert all(migrated[c].null_count == migrated.num_rows for c in LINEAGE), "older rows read null lineage"
    key = ["vehicle_id", "event_id"]
    assert sorted(migrated.select(old.schema.names).to_pylist(), key=lambda r: [r[k] for k in key]) == sorted(
        old.to_pylist(), key=lambda r: [r[k] for k in key]
    ), "the old rows are untouched"

    # The next hour publishes onto the migrated table, with its lineage.
    report = run_silver(SilverOptions(root, sc.H09, gate=False))
    assert report.inserted > 0
    rows = delta_dataset(path).to_table().to_pylist()
    new = [r for r in rows if r["bronze_hour"] == sc.H09]
    assert len(new) == report.inserted and all(r["kafka_topic"] and r["bronze_file"] for r in new)
    assert len(rows) == old.num_rows + report.inserted

    assert main(["migrate", "--lake-root", root]) == 0
    out = capsys.readouterr().out
    assert "silver_telemetry: current" in out and "added" not in out


def test_a_table_that_is_not_an_older_prefix_is_named_and_left_alone(tmp_path, capsys):
    root = str(tmp_path / "lake")
    path = LakePaths(root).table("gold_vehicle_state")
    write_deltalake(path, pa.table({"vehicle_id": ["V1"], "colour": ["red"]}))
    assert main(["migrate", "--lake-root", root]) == 4
    out = capsys.readouterr().out
    assert "gold_vehicle_state: NOT migrated" in out and "colour" in out
    assert DeltaTable(path).version() == 0
