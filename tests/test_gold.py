"""``lake gold``: a Silver day -> gold/vehicle_hourly, gold/zone_hourly, gold/vehicle_state."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict

import pytest
from deltalake import DeltaTable

from beam_pipelines.gold.options import GoldOptions
from beam_pipelines.gold.pipeline import run_gold
from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake.cli import main
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from support import lake_scenario as sc
from support.bronze_builder import HOUR, ms

DAY = "2026-03-01"


def table(root: str, name: str) -> list:
    return delta_dataset(LakePaths(root).table(name)).to_table().to_pylist()


def hourly(root: str) -> dict:
    return {(r["vehicle_id"], r["hour_start"].timestamp() * 1000): r for r in table(root, "gold_vehicle_hourly")}


def state(root: str) -> dict:
    return {r["vehicle_id"]: r for r in table(root, "gold_vehicle_state")}


def gold(root: str, date: str = DAY):
    return run_gold(GoldOptions(root, date, gate=False))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gold") / "lake")
    sc.build(root)
    for hour in (sc.H08, sc.H09):
        run_silver(SilverOptions(root, hour, gate=False))
    return root, gold(root)


@pytest.fixture
def lake_copy(lake, tmp_path):
    root = str(tmp_path / "lake")
    shutil.copytree(lake[0], root)
    return root


def _check(row: dict, expected: dict) -> None:
    for key, value in expected.items():
        got = row[key]
        if key.endswith("_ts"):
            got = got.timestamp() * 1000
        if isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-9), key
        else:
            assert got == value, key


def test_vehicle_hourly_values(lake):
    rows = hourly(lake[0])
    h08, h09 = ms("08:00:00"), ms("09:00:00")
    _check(rows[("V1", h08)], sc.V1_HOUR_08)
    _check(rows[("V1", h09)], sc.V1_HOUR_09)
    _check(rows[("S1", h08)], sc.S1_HOUR_08)
    _check(rows[("V2", h08)], sc.V2_HOUR_08)
    _check(rows[("V3", h08)], sc.V3_HOUR_08)
    assert set(rows) == {("V1", h08), ("V1", h09), ("V2", h08), ("V3", h08), ("S1", h08), ("S2", h08)}
    assert all(str(r["event_date"]) == DAY for r in rows.values())


def test_gold_reconciles_with_silver(lake):
    root, report = lake
    silver_day = [r for r in table(root, "silver_telemetry") if str(r["event_date"]) == DAY]
    assert sum(r["event_count"] for r in table(root, "gold_vehicle_hourly")) == len(silver_day) == sc.DAY_ROWS
    assert report.silver_rows == sc.DAY_ROWS and report.vehicle_hours == 6


def test_zone_hourly_matches_silver_grouped_by_hand(lake):
    root, _ = lake
    groups = defaultdict(list)
    for r in table(root, "silver_telemetry"):
        if str(r["event_date"]) == DAY and r["zone_id"] is not None:
            hour = r["event_ts"].timestamp() * 1000 // HOUR * HOUR
            groups[(r["zone_id"], hour)].append(r)
    got = {(r["zone_id"], r["hour_start"].timestamp() * 1000): r for r in table(root, "gold_zone_hourly")}
    assert set(got) == set(groups)
    for key, rows in groups.items():
        socs = [r["soc_pct"] for r in rows if r["soc_pct"] is not None]
        assert got[key]["event_count"] == len(rows)
        assert got[key]["active_vehicles"] == len({r["vehicle_id"] for r in rows})
        assert got[key]["soc_avg"] == (pytest.approx(sum(socs) / len(socs)) if socs else None)


def test_vehicle_state_rebuilds_fragmented_signals(lake):
    rows = state(lake[0])
    assert set(rows) == {"V1", "V2", "V3", "S1", "S2"}
    _check(rows["S1"], sc.S1_STATE)
    _check(rows["V1"], sc.V1_STATE)
    assert rows["S2"]["vehicle_type"] == "unknown" and rows["S2"]["soc_pct"] == 55.0
    assert str(rows["V2"]["as_of_date"]) == DAY
    assert rows["V2"]["last_event_ts"].timestamp() * 1000 == ms("08:35:00")


def test_rerun_gives_the_same_tables(lake_copy):
    before = {n: table(lake_copy, n) for n in ("gold_vehicle_hourly", "gold_zone_hourly", "gold_vehicle_state")}
    gold(lake_copy)
    after = {n: table(lake_copy, n) for n in before}
    for name in before:
        key = sorted(before[name][0])
        assert sorted(before[name], key=lambda r: [str(r[k]) for k in key]) == sorted(
            after[name], key=lambda r: [str(r[k]) for k in key]
        ), name


def test_an_older_day_keeps_the_newer_state_and_every_vehicle(lake_copy):
    before = state(lake_copy)
    report = gold(lake_copy, "2026-02-23")  # only V2's k4, six days behind
    assert report.vehicle_hours == 1
    after = state(lake_copy)
    assert after == before  # V2's state is newer than that day; nobody is lost
    days = {str(r["event_date"]) for r in table(lake_copy, "gold_vehicle_hourly")}
    assert days == {DAY, "2026-02-23"}
    assert (
        sum(r["event_count"] for r in table(lake_copy, "gold_vehicle_hourly") if str(r["event_date"]) == DAY)
        == sc.DAY_ROWS
    )


def test_a_newer_day_updates_fields_it_has_and_keeps_the_rest(lake_copy):
    """Day 2026-03-02: one S1 soc signal. Its soc wins; its position stays the old one."""
    from support.bronze_builder import BronzeBuilder

    t = ms("2026-03-02T07:00:00")
    b = BronzeBuilder(lake_copy)
    b.signal("S1", "soc", t, t + 100, float_value=42.0)
    b.write()
    run_silver(SilverOptions(lake_copy, "2026-03-02T07", gate=False))
    gold(lake_copy, "2026-03-02")
    s1 = state(lake_copy)["S1"]
    assert (s1["soc_pct"], s1["lat"], s1["speed_kmh"], str(s1["as_of_date"])) == (42.0, 52.501, 14.0, "2026-03-02")
    assert s1["last_event_ts"].timestamp() * 1000 == t
    gold(lake_copy, DAY)  # rebuilding the older day afterwards does not undo it
    assert state(lake_copy)["S1"]["soc_pct"] == 42.0


def test_day_without_silver_rows_is_a_clear_error(lake_copy, capsys):
    versions = [
        DeltaTable(LakePaths(lake_copy).table(n)).version()
        for n in ("gold_vehicle_hourly", "gold_zone_hourly", "gold_vehicle_state")
    ]
    assert main(["gold", "--date", "2026-03-09", "--lake-root", lake_copy]) == 4
    err = capsys.readouterr().err.strip()
    assert (
        err == f"lake: error: Silver has no rows for 2026-03-09 (event_date, UTC) in "
        f"{LakePaths(lake_copy).table('silver_telemetry')}"
    )
    assert versions == [
        DeltaTable(LakePaths(lake_copy).table(n)).version()
        for n in ("gold_vehicle_hourly", "gold_zone_hourly", "gold_vehicle_state")
    ]
    assert main(["gold", "--date", "yesterday", "--lake-root", lake_copy]) == 2


def test_no_silver_table_is_a_clear_error(tmp_path, capsys):
    assert main(["gold", "--date", DAY, "--lake-root", str(tmp_path)]) == 4
    assert "run `lake silver --hour ...` first" in capsys.readouterr().err


def test_compute_handles_a_lone_row_and_empty_input():
    import pyarrow as pa

    from beam_pipelines.gold.compute import vehicle_hourly, vehicle_state, zone_hourly_partial
    from lake_schemas.tables import SILVER_SCHEMA

    assert vehicle_hourly(SILVER_SCHEMA.empty_table()).num_rows == 0
    assert vehicle_state(SILVER_SCHEMA.empty_table(), dt.date(2026, 3, 1)).num_rows == 0
    row = {f.name: None for f in SILVER_SCHEMA}
    row.update(
        vehicle_id="V",
        event_id="e",
        event_ts=ms("08:00:00"),
        ingest_ts=ms("08:00:00"),
        event_date=dt.date(2026, 3, 1),
        ts_corrected=False,
        source_shape="snapshot",
        vehicle_type="car",
        kafka_partition=0,
        kafka_offset=0,
        soc_pct=5.0,
        error_codes=["E1"],
    )
    one = pa.Table.from_pylist([row], schema=SILVER_SCHEMA)
    h = vehicle_hourly(one).to_pylist()[0]
    assert (h["event_count"], h["distance_km"], h["usage_seconds"], h["low_battery_events"]) == (1, 0.0, 0.0, 1)
    assert vehicle_state(one, dt.date(2026, 3, 1)).to_pylist()[0]["error_codes"] == ["E1"]
    assert zone_hourly_partial(one).num_rows == 0
