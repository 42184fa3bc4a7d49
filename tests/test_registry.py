"""The vehicle registry dims/vehicles: idempotent upserts, strict CSV import."""

from __future__ import annotations

import datetime as dt

import pytest
from deltalake import DeltaTable

from edge_client.config import SimulationConfig
from edge_client.simulate import build_fleet
from lake.cli import main
from lake.commands.simulate import register_fleet
from lake_core.errors import LakeDataError
from lake_core.registry import (
    import_registry_csv,
    read_registry,
    registry_path,
    upsert_vehicles,
)
from lake_schemas import REGISTRY_SCHEMA

START_MS = 1_772_352_000_000
DAY_MS = 86_400_000


def rows(lake_root):
    table = read_registry(lake_root)
    return {r["vehicle_id"]: (r["vehicle_type"], r["registered_at"]) for r in table.to_pylist()}


def version(lake_root):
    return DeltaTable(registry_path(lake_root)).version()


def utc(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def test_register_fleet_writes_every_vehicle_with_its_type(lake_root):
    cfg = SimulationConfig(vehicles=25, start_ms=START_MS, seed=4)
    result = register_fleet(lake_root, cfg)
    assert (result.inserted, result.updated, result.unchanged) == (25, 0, 0)
    fleet = build_fleet(cfg)
    assert rows(lake_root) == {v: (t, utc(START_MS)) for v, t in zip(fleet.vehicle_ids, fleet.type_names)}
    table = DeltaTable(registry_path(lake_root))
    assert table.schema().to_arrow().names == REGISTRY_SCHEMA.names
    assert registry_path(lake_root).endswith("/dims/vehicles")


def test_rerunning_changes_nothing_and_keeps_the_first_registered_at(lake_root):
    cfg = SimulationConfig(vehicles=10, start_ms=START_MS)
    register_fleet(lake_root, cfg)
    before, v0 = rows(lake_root), version(lake_root)
    again = register_fleet(lake_root, cfg)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 10)
    assert rows(lake_root) == before
    # A later, larger run adds the new vehicles; the old ones keep their date.
    later = register_fleet(lake_root, SimulationConfig(vehicles=15, start_ms=START_MS + DAY_MS))
    assert later.inserted == 5
    after = rows(lake_root)
    assert len(after) == 15
    assert all(after[v][1] == utc(START_MS) for v in before)
    assert {after[v][1] for v in set(after) - set(before)} == {utc(START_MS + DAY_MS)}
    assert version(lake_root) >= v0


def test_a_changed_type_is_updated_in_place(lake_root):
    upsert_vehicles(lake_root, ["A1", "A2"], ["scooter", "car"], START_MS)
    result = upsert_vehicles(lake_root, ["A1", "A2"], ["ebike", "car"], START_MS + DAY_MS)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)
    assert rows(lake_root) == {"A1": ("ebike", utc(START_MS)), "A2": ("car", utc(START_MS))}


def test_read_registry_without_a_table_is_empty(lake_root):
    table = read_registry(lake_root)
    assert table.num_rows == 0 and table.schema.names == REGISTRY_SCHEMA.names


def test_import_csv(lake_root, tmp_path):
    csv = tmp_path / "fleet.csv"
    csv.write_text("vehicle_type,vehicle_id,depot\nScooter,S-1,north\ncar,C_2,south\n\ncar,C_2,south\n")
    result = import_registry_csv(lake_root, csv, registered_at_ms=START_MS)
    assert result.inserted == 2
    assert rows(lake_root) == {"S-1": ("scooter", utc(START_MS)), "C_2": ("car", utc(START_MS))}
    assert import_registry_csv(lake_root, csv).unchanged == 2  # idempotent


@pytest.mark.parametrize(
    "text, lines",
    [
        ("vehicle_id,vehicle_type\nV1,car\nV 2,car\nV3,scooter\nV4!,car\n", ["line 3", "line 5"]),
        ("vehicle_id,vehicle_type\nV1,car\nV2,\nV3,  \n", ["line 3", "line 4", "empty vehicle_type"]),
        ("vehicle_id,vehicle_type\nV1,car\nV2\n", ["line 3", "1 column"]),
        ("vehicle_id,vehicle_type\nV1,car\nV2,ebike\nV1,scooter\n", ["lines 2 and 4", "V1"]),
        ("vehicle_id,type\nV1,car\n", ["line 1", "vehicle_type"]),
        ("vehicle_id,vehicle_type\n" + "x" * 65 + ",car\n", ["line 2"]),
        ("", ["empty file"]),
        ("vehicle_id,vehicle_type\n", ["no vehicles"]),
    ],
)
def test_bad_csv_rows_name_their_lines_and_leave_the_table_untouched(lake_root, tmp_path, text, lines):
    upsert_vehicles(lake_root, ["V1", "V9"], ["ebike", "car"], START_MS)
    before, v0 = rows(lake_root), version(lake_root)
    csv = tmp_path / "fleet.csv"
    csv.write_text(text)
    with pytest.raises(LakeDataError) as exc:
        import_registry_csv(lake_root, csv)
    message = str(exc.value)
    assert "\n" not in message
    for expected in lines:
        assert expected in message
    assert rows(lake_root) == before and version(lake_root) == v0


def test_missing_csv_is_a_data_error(lake_root, tmp_path):
    with pytest.raises(LakeDataError, match="no such file"):
        import_registry_csv(lake_root, tmp_path / "nope.csv")


def test_cli_registry_import(lake_root, tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text("vehicle_id,vehicle_type\nV000001,car\nV000002,scooter\n")
    assert main(["registry", "import", str(good), "--lake-root", lake_root]) == 0
    assert "2 new" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("vehicle_id,vehicle_type\nV000001,car\nnot valid,car\n")
    assert main(["registry", "import", str(bad), "--lake-root", lake_root]) == LakeDataError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 3" in err[0]
    assert set(rows(lake_root)) == {"V000001", "V000002"}


def test_cli_simulate_registers_the_fleet_unless_told_not_to(lake_root, tmp_path):
    common = [
        "simulate",
        "--vehicles",
        "6",
        "--duration",
        "10s",
        "--sink",
        f"jsonl:{tmp_path / 'o.jsonl'}",
        "--lake-root",
        lake_root,
        "--no-progress",
    ]
    assert main([*common, "--no-registry"]) == 0
    assert read_registry(lake_root).num_rows == 0
    assert main([*common, "--start", "2026-03-02T00:00:00Z"]) == 0
    registry = rows(lake_root)
    assert set(registry) == {f"V{i:06d}" for i in range(6)}
    assert {at for _, at in registry.values()} == {dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)}
