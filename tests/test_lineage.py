"""Lineage (``lake lineage``, ``lake.lineage.lineage``): from a Gold row back to Kafka offsets, checked
against a computation straight from Bronze's files."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_pipelines.gold.options import GoldOptions
from beam_pipelines.gold.pipeline import run_gold
from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake.cli import main
from lake.lineage import lineage
from lake.query import query
from lake_core.errors import ConfigError, LakeDataError
from support import lake_scenario as sc
from support.bronze_builder import ms


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("lineage") / "lake")
    sc.build(root)
    for hour in (sc.H08, sc.H09):
        run_silver(SilverOptions(root, hour, gate=False))
    run_gold(GoldOptions(root, "2026-03-01", gate=False))
    return root


def bronze_rows(root: str) -> list:
    found = []
    for directory, _, files in os.walk(f"{root}/bronze/telemetry"):
        for name in files:
            if name.endswith(".parquet"):
                for row in pq.read_table(f"{directory}/{name}").to_pylist():
                    found.append({**row, "file": os.path.relpath(f"{directory}/{name}", root)})
    return found


def first_copies_from_bronze(root: str, vehicle: str, hour_start: int) -> set:
    """Straight from Bronze: the first-ingested copy of each of the vehicle's snapshot events in the hour."""
    copies = defaultdict(list)
    for row in bronze_rows(root):
        message = json.loads(row["payload"])
        if not isinstance(message, dict) or message.get("vehicle_id") != vehicle:
            continue
        if not hour_start <= message["ts"] < hour_start + 3_600_000:
            continue
        copies[message["event_id"]].append(row)
    first = [min(c, key=lambda r: (r["ingest_ts"], r["kafka_partition"], r["kafka_offset"])) for c in copies.values()]
    return {(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], r["file"]) for r in first}


def test_a_gold_row_leads_to_exactly_the_offsets_bronze_gives(lake):
    rows = lineage("gold_vehicle_hourly", lake, vehicle="V1", hour=sc.H08)
    got = {(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], r["bronze_file"]) for r in rows.to_pylist()}
    assert got == first_copies_from_bronze(lake, "V1", ms("08:00:00"))
    gold = query(
        "SELECT event_count FROM gold_vehicle_hourly "
        "WHERE vehicle_id = 'V1' AND hour_start = TIMESTAMPTZ '2026-03-01 08:00:00+00'",
        lake,
    )
    assert rows.num_rows == gold["event_count"][0].as_py()


def test_every_hourly_gold_row_adds_up_to_its_lineage(lake):
    gold = query("SELECT vehicle_id, hour_start, event_count FROM gold_vehicle_hourly", lake).to_pylist()
    for row in gold:
        hour = row["hour_start"].strftime("%Y-%m-%dT%H")
        assert lineage("gold_vehicle_hourly", lake, vehicle=row["vehicle_id"], hour=hour).num_rows == row["event_count"]
    zones = query("SELECT zone_id, hour_start, event_count FROM gold_zone_hourly", lake).to_pylist()
    for row in zones:
        hour = row["hour_start"].strftime("%Y-%m-%dT%H")
        assert lineage("gold_zone_hourly", lake, zone=row["zone_id"], hour=hour).num_rows == row["event_count"]


def test_a_paired_position_names_both_records_and_their_files(lake):
    rows = lineage("gold_vehicle_hourly", lake, vehicle="S1", hour=sc.H08).to_pylist()
    paired = [r for r in rows if r["paired_kafka_offset"] is not None]
    assert len(paired) == 2  # the positions of 08:00:00 and 08:00:30
    for r in paired:
        for side, offset, path in (
            ("lat", r["kafka_offset"], r["bronze_file"]),
            ("lon", r["paired_kafka_offset"], r["paired_bronze_file"]),
        ):
            table = pq.read_table(f"{lake}/{path}")
            payload = table.filter(pc.equal(table["kafka_offset"], offset))["payload"][0].as_py()
            message = json.loads(payload)
            assert message["name"] == side and r["event_id"] == f"S1:lat:{message['timestamp']}"


def test_the_state_names_the_rows_that_gave_each_latest_value(lake):
    rows = lineage("gold_vehicle_state", lake, vehicle="S1").to_pylist()
    fields = {f: r["event_id"] for r in rows for f in r["fields"]}
    assert fields["soc_pct"] == "S1:soc:1772352000000"  # the 200 of 08:00:40 was quarantined
    assert fields["speed_kmh"] == "S1:speed:1772352030000"
    assert fields["lat"] == fields["lon"] == "S1:lat:1772352030000"


def test_cli_table_and_json(lake, capsys):
    assert main(["lineage", "gold_vehicle_hourly", "--lake-root", lake, "--vehicle", "V1", "--hour", sc.H08]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gold_vehicle_hourly V1 2026-03-01T08: event_count ") and "kafka_offset" in out
    assert (
        main(
            [
                "lineage",
                "gold_vehicle_hourly",
                "--lake-root",
                lake,
                "--vehicle",
                "V1",
                "--hour",
                sc.H08,
                "--format",
                "json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(isinstance(r["kafka_offset"], int) and r["bronze_file"].startswith("bronze/") for r in rows)


def test_a_key_that_names_no_row_is_a_one_line_error(lake, capsys):
    with pytest.raises(LakeDataError, match="gold_vehicle_hourly has no row for vehicle_id V9"):
        lineage("gold_vehicle_hourly", lake, vehicle="V9", hour=sc.H08)
    with pytest.raises(ConfigError, match="named by --vehicle --hour"):
        lineage("gold_vehicle_hourly", lake, vehicle="V1")
    assert main(["lineage", "gold_zone_hourly", "--lake-root", lake, "--vehicle", "V1", "--hour", sc.H08]) == 2
    assert "named by --zone --hour" in capsys.readouterr().err


def test_pandas_for_notebooks(lake):
    frame = lineage("gold_vehicle_hourly", lake, vehicle="V1", hour=sc.H08, output="pandas")
    assert list(frame.columns)[:3] == ["vehicle_id", "event_id", "event_ts"] and len(frame) > 0
