"""The quality gates (Great Expectations): a failing batch is not published."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lake.cli import main
from lake_core.errors import QualityGateFailed
from lake_schemas import LakePaths
from support import lake_scenario as sc


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("quality") / "lake")
    sc.build(root)
    return root


def _summaries(root: str, layer: str, key: str) -> list:
    paths = sorted(glob.glob(f"{root}/_quality/results/{layer}/{key}/*.json"))
    return [json.load(open(p)) for p in paths]


def test_a_failing_silver_batch_is_not_published(lake, capsys):
    # Hour 08 quarantines 9 of its 38 Bronze rows: more than the default 10%.
    assert main(["silver", "--hour", sc.H08, "--lake-root", lake]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "lake: error: silver batch 2026-03-01T08 failed its quality gate (nothing was "
        "published): silver_quarantine_rate"
    )
    assert "9 of 38 rows (23.7%)" in err[-1]
    paths = LakePaths(lake)
    assert not DeltaTable.is_deltatable(paths.table("silver_telemetry"))
    assert not DeltaTable.is_deltatable(paths.table("silver_quarantine"))
    summary = _summaries(lake, "silver", sc.H08)[-1]
    assert summary["success"] is False and summary["failed"] == ["silver_quarantine_rate"]
    assert summary["warnings"] == ["silver_vehicle_registered"]  # V3 and S2 are not registered
    dropped = {r["rule"]: r["detail"] for r in summary["rules"] if r["action"] == "drop"}
    assert dropped["silver_invalid_gps"].startswith("5 of 38 rows")
    assert os.path.exists(f"{lake}/_quality/gx/uncommitted/data_docs/local_site/index.html")


def test_a_higher_threshold_publishes_and_records_the_warning(lake, capsys):
    assert main(["silver", "--hour", sc.H08, "--lake-root", lake, "--max-quarantine-rate", "0.5"]) == 0
    assert "23 new silver rows" in capsys.readouterr().out
    summary = _summaries(lake, "silver", sc.H08)[-1]
    assert summary["success"] is True and summary["warnings"] == ["silver_vehicle_registered"]


@pytest.mark.slow
def test_gold_gate_passes_and_validate_commands_agree(lake, capsys):
    assert main(["silver", "--hour", sc.H09, "--lake-root", lake, "--max-quarantine-rate", "0.5"]) == 0
    assert main(["gold", "--date", "2026-03-01", "--lake-root", lake]) == 0
    assert _summaries(lake, "gold", "2026-03-01")[-1]["success"] is True
    for args in (["bronze", "--hour", sc.H08], ["silver", "--date", "2026-03-01"], ["gold", "--date", "2026-03-01"]):
        assert main(["validate", *args, "--lake-root", lake]) == 0, args
    out = capsys.readouterr().out
    assert "gold 2026-03-01: " in out and "no failed rule" in out


@pytest.mark.slow
def test_a_gated_job_ends_with_its_data_docs_built_and_its_gate_process_gone(lake):
    """The gate process builds a gate's Data Docs pages after its verdict, while the job commits; the
    job waits for them, then ends the idle gate process at once (no interpreter teardown to wait for,
    no resource-tracker warning)."""
    import shutil
    import subprocess
    import sys
    import uuid

    import psutil

    docs = f"{lake}/_quality/gx/uncommitted/data_docs/local_site"
    shutil.rmtree(docs, ignore_errors=True)
    marker = uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "lake.cli", "gold", "--date", "2026-03-01", "--lake-root", lake],
        capture_output=True, text=True, timeout=300, env={**os.environ, "LAKE_TEST_JOB": marker},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "leaked" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    pages = glob.glob(f"{docs}/validations/gold_*/2026-03-01/*/*.html")
    assert len(pages) == 6, pages  # three tables, their schema and their rows
    assert "2026-03-01" in open(f"{docs}/index.html").read()

    def left_behind() -> list:
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("LAKE_TEST_JOB") == marker:
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    assert left_behind() == []


@pytest.mark.slow
def test_validate_silver_hour_is_a_dry_run(lake, capsys):
    version = DeltaTable(LakePaths(lake).table("silver_telemetry")).version()
    assert main(["validate", "silver", "--hour", sc.H08, "--lake-root", lake]) == 5
    assert "(it would not be published): silver_quarantine_rate" in capsys.readouterr().err
    assert DeltaTable(LakePaths(lake).table("silver_telemetry")).version() == version


def test_gold_gate_checks_reconciliation_and_keys(lake):
    from beam_pipelines.gold.compute import (
        GoldParts,
        finish_zone_hourly,
        vehicle_hourly,
        vehicle_state,
        zone_hourly_partial,
    )
    from lake_core.storage import delta_dataset
    from lake_schemas.tables import SILVER_SCHEMA
    from quality.gates import GoldGate

    day = dt.date(2026, 3, 1)
    silver = delta_dataset(LakePaths(lake).table("silver_telemetry")).to_table()
    silver = silver.filter(pa.compute.equal(silver["event_date"], pa.scalar(day))).select(SILVER_SCHEMA.names)
    silver = silver.cast(SILVER_SCHEMA)
    hourly = vehicle_hourly(silver)
    zone = finish_zone_hourly(zone_hourly_partial(silver))
    state = vehicle_state(silver, day)
    GoldGate(lake)(hourly, zone, state, silver.num_rows, day)  # passes
    with pytest.raises(QualityGateFailed) as failed:
        extra = hourly["event_count"][0].as_py()  # the doubled row still reconciles: only the key is wrong
        GoldGate(lake)(pa.concat_tables([hourly, hourly.slice(0, 1)]), zone, state, silver.num_rows + extra, day)
    message = str(failed.value)
    assert "gold_hourly_key_unique" in message and "gold_hourly_reconciles" not in message
    with pytest.raises(QualityGateFailed, match="gold_hourly_reconciles"):
        GoldGate(lake)(hourly, zone, state, silver.num_rows - 1, day)
    assert GoldParts  # the parts type is what CommitGold hands the gate


def test_silver_gate_fails_on_duplicate_keys(lake):
    from lake_core.storage import delta_dataset
    from lake_schemas.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA
    from quality.gates import SilverGate

    rows = delta_dataset(LakePaths(lake).table("silver_telemetry")).to_table().select(SILVER_SCHEMA.names)
    rows = rows.cast(SILVER_SCHEMA)
    doubled = pa.concat_tables([rows, rows.slice(0, 2)])
    with pytest.raises(QualityGateFailed, match=r"silver_key_unique \(expect_compound_columns_to_be_unique"):
        SilverGate(lake)(doubled, QUARANTINE_SCHEMA.empty_table(), {"bronze_rows": doubled.num_rows}, "2026-03-01T23")


def _gate_rules(lake: str, hour: str) -> list:
    return [(r["rule"], r["success"], r["column"], r["detail"]) for r in _summaries(lake, "silver", hour)[-1]["rules"]]


def test_silver_gate_in_parts_finds_what_the_whole_hour_gate_finds(lake):
    """A big hour is gated chunk by chunk (tables, or staged files the gate process reads): each rule's
    counts are summed over the chunks, so the verdict and the details are the whole hour's."""
    import pyarrow.compute as pc

    from beam_pipelines.staging import StagingArea
    from lake_core.storage import delta_dataset
    from lake_schemas.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA
    from quality.gates import SilverGate

    rows = delta_dataset(LakePaths(lake).table("silver_telemetry")).to_table().select(SILVER_SCHEMA.names)
    rows = rows.cast(SILVER_SCHEMA).sort_by("vehicle_id")
    # two rows lose their vehicle type, in different chunks
    types = rows["vehicle_type"].to_pylist()
    types[1] = types[-1] = None
    rows = rows.set_column(rows.schema.get_field_index("vehicle_type"), "vehicle_type", pa.array(types, pa.string()))
    vehicles = pc.unique(rows["vehicle_id"]).to_pylist()
    assert len(vehicles) >= 3
    groups = (vehicles[:1], vehicles[1:2], vehicles[2:])
    shards = [rows.filter(pc.is_in(rows["vehicle_id"], pa.array(vs))) for vs in groups]
    staging = StagingArea(lake, "test-gate")
    parts = [shards[0], [staging.put(shards[1]), staging.put(shards[2].slice(0, 1))], [staging.put(shards[2].slice(1))]]
    stats = {"bronze_rows": rows.num_rows}
    quarantine = QUARANTINE_SCHEMA.empty_table()
    hour_whole, hour_parts = "2026-03-01T20", "2026-03-01T21"
    failures = []
    for hour, silver in ((hour_whole, rows), (hour_parts, parts)):
        with pytest.raises(QualityGateFailed) as failed:
            SilverGate(lake)(silver, quarantine, stats, hour)
        failures.append(str(failed.value).replace(hour, "H"))
    staging.remove()
    assert failures[0] == failures[1]
    assert f"on vehicle_type: 2 of {rows.num_rows:,} rows" in failures[1]
    assert _gate_rules(lake, hour_whole) == _gate_rules(lake, hour_parts)
    validations = glob.glob(f"{lake}/_quality/gx/uncommitted/validations/silver_telemetry/*")
    assert {f"{hour_parts} part {i} of 3" for i in (1, 2, 3)} <= {os.path.basename(v) for v in validations}
