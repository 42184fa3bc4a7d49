"""``lake query`` and ``lake.query.query`` over every table of contract section 6, on a lake
the real jobs built (the scenario's Bronze, Silver of both hours, Gold of the day)."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest

from beam_pipelines.gold.options import GoldOptions
from beam_pipelines.gold.pipeline import run_gold
from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake.cli import main
from lake.query import query
from lake_core.errors import LakeError
from lake_schemas import TABLES
from lake_schemas import tables as schemas
from support import lake_scenario as sc

CONTRACT_SCHEMAS = {
    "silver_telemetry": schemas.SILVER_SCHEMA,
    "silver_quarantine": schemas.QUARANTINE_SCHEMA,
    "gold_vehicle_hourly": schemas.GOLD_VEHICLE_HOURLY_SCHEMA,
    "gold_zone_hourly": schemas.GOLD_ZONE_HOURLY_SCHEMA,
    "gold_vehicle_state": schemas.GOLD_VEHICLE_STATE_SCHEMA,
    "dims_vehicles": schemas.REGISTRY_SCHEMA,
    "ledger_hours": schemas.LEDGER_HOURS_SCHEMA,
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("query") / "lake")
    sc.build(root)
    for hour in (sc.H08, sc.H09):
        run_silver(SilverOptions(root, hour, gate=False))
    run_gold(GoldOptions(root, "2026-03-01", gate=False))
    return root


@pytest.mark.parametrize(
    "table", sorted(set(TABLES) - {"bronze_rejects", "gold_alerts"})
)  # the scenario refuses nothing and runs no hot path (gold_alerts: tests/test_gold_alerts.py)
def test_every_table_answers_a_filter_on_a_string_column(lake, table):
    """deltalake writes strings as string_view: a filter pushed into an Arrow dataset of such files fails
    in pyarrow 25; the Delta tables are read so that it does not."""
    column = {"dims_vehicles": "vehicle_type", "gold_zone_hourly": "zone_id", "ledger_hours": "hour"}.get(
        table, "vehicle_id"
    )
    everything = query(f"SELECT {column} FROM {table}", lake)
    assert everything.num_rows > 0
    value = everything[column].drop_null()[0].as_py()
    expected = sum(1 for v in everything[column].to_pylist() if v == value)
    got = query(f"SELECT count(*) AS n FROM {table} WHERE {column} = '{value}'", lake)
    assert got["n"][0].as_py() == expected


@pytest.mark.parametrize("table", sorted(CONTRACT_SCHEMAS))
def test_select_star_has_the_contract_columns_in_order(lake, table):
    result = query(f"SELECT * FROM {table}", lake)
    assert result.column_names == CONTRACT_SCHEMAS[table].names
    assert result.schema.field("event_date" if "event_date" in result.column_names else result.column_names[0])


def test_values_match_what_the_jobs_wrote(lake):
    rows = query(
        "SELECT vehicle_id, event_date, count(*) AS n FROM silver_telemetry "
        "WHERE vehicle_id IN ('V1', 'S1') AND event_date = DATE '2026-03-01' GROUP BY ALL ORDER BY 1",
        lake,
    )
    counts = {r["vehicle_id"]: r["n"] for r in rows.to_pylist()}
    assert set(counts) == {"S1", "V1"} and all(n > 0 for n in counts.values())
    hourly = query("SELECT sum(event_count) AS n FROM gold_vehicle_hourly WHERE event_date = DATE '2026-03-01'", lake)
    silver = query("SELECT count(*) AS n FROM silver_telemetry WHERE event_date = DATE '2026-03-01'", lake)
    assert hourly["n"][0].as_py() == silver["n"][0].as_py()  # Gold reconciles with Silver


def test_pandas_output_for_notebooks(lake):
    frame = query("SELECT vehicle_id, vehicle_type FROM gold_vehicle_state ORDER BY 1", lake, output="pandas")
    assert list(frame.columns) == ["vehicle_id", "vehicle_type"] and len(frame) > 0


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_cli_formats(lake, fmt, capsys):
    rc = main(
        [
            "query",
            "--lake-root",
            lake,
            "--format",
            fmt,
            "SELECT vehicle_id, event_count FROM gold_vehicle_hourly WHERE vehicle_id = 'V1' ORDER BY hour_start",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    if fmt == "json":
        rows = json.loads(out)
        assert rows and {r["vehicle_id"] for r in rows} == {"V1"}
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert rows and {r["vehicle_id"] for r in rows} == {"V1"}
    else:
        assert out.splitlines()[0].split("|")[0].strip() == "vehicle_id" and "V1" in out


def test_a_table_not_written_yet_and_bad_sql_are_one_line_errors(tmp_path, lake, capsys):
    with pytest.raises(LakeError, match="gold_zone_hourly does not exist yet"):
        query("SELECT * FROM gold_zone_hourly", str(tmp_path / "empty"))
    rc = main(["query", "--lake-root", lake, "SELEC nonsense FROM silver_telemetry"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and err.startswith("lake: error: query failed") and "\n" not in err


def test_json_keeps_numbers_numbers(lake, capsys):
    """sum() of integers is a DuckDB HUGEINT (a Decimal in Python): it printed as the string "10"."""
    sql = (
        "SELECT sum(event_count) AS events, sum(event_count) / 2 AS half, avg(event_count) AS mean, "
        "max(hour_start) AS last FROM gold_vehicle_hourly"
    )
    assert main(["query", "--lake-root", lake, "--format", "json", sql]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert isinstance(row["events"], int) and row["events"] > 0
    assert isinstance(row["half"], (int, float)) and isinstance(row["mean"], float)
    assert isinstance(row["last"], str) and row["last"].startswith("2026-03-01")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_json('{root}/_devices/credentials.json')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY (SELECT * FROM silver_telemetry) TO '{root}/stolen.csv'",
        "SET enable_external_access = true",
        "INSTALL httpfs",
    ],
)
def test_sql_reads_the_named_tables_and_no_other_file(lake, sql):
    """Credentials sit under the lake root (``_devices``): SQL must not reach them, nor any other file."""
    os.makedirs(f"{lake}/_devices", exist_ok=True)
    with open(f"{lake}/_devices/credentials.json", "w") as f:
        f.write('{"devices": {}}')
    with pytest.raises(LakeError, match="query failed"):
        query(sql.format(root=lake), lake)
    assert not os.path.exists(f"{lake}/stolen.csv")
