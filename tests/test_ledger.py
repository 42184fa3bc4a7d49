"""The conservation ledger (``_ledger/hours``, ``lake ledger``; contract section 10) on the scenario lake.

Each test that breaks something shows ``lake ledger`` exiting 6 and naming
the equation; the explained changes (late rows, ``lake forget``, a re-run)
keep it at 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from beam_pipelines.gold.options import GoldOptions
from beam_pipelines.gold.pipeline import run_gold
from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake.cli import main
from lake.lifecycle.forget import forget_vehicle
from lake.orchestration.hourly import silver_published
from lake.orchestration.ledger_gate import ledger_gate
from lake.query import query
from lake_core import hot_store
from lake_core.errors import LedgerImbalance
from lake_core.ledger import check_hours, hours_of_day
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.ledger import EQUATIONS
from lake_schemas.tables import GOLD_VEHICLE_HOURLY_SCHEMA as HOURLY
from support import lake_scenario as sc
from support.bronze_builder import BronzeBuilder, ms
from support.hot_fleet import fresh_hot_store

DAY = "2026-03-01"


def silver(root: str, hour: str) -> None:
    run_silver(SilverOptions(root, hour, gate=False))


def gold(root: str, day: str = DAY) -> None:
    run_gold(GoldOptions(root, day, gate=False))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """The scenario's lake: Silver ran hours 08 and 09, then Gold the day."""
    root = str(tmp_path_factory.mktemp("ledger") / "lake")
    sc.build(root)
    silver(root, sc.H08)
    silver(root, sc.H09)
    gold(root)
    return root


@pytest.fixture
def lake_copy(lake, tmp_path):
    return shutil.copytree(lake, str(tmp_path / "lake"))


def ledger(root: str, capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["ledger", "--lake-root", root, *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def ledger_rows(root: str) -> list:
    table = delta_dataset(LakePaths(root).table("ledger_hours")).to_table()
    return sorted(table.to_pylist(), key=lambda r: (r["hour"], r["generation"], r["kafka_partition"]))


def test_the_scenario_balances_every_hour_and_partition(lake, capsys):
    rc, out, _ = ledger(lake, capsys, "--date", DAY)
    assert rc == 0, out
    assert "balanced" in out.splitlines()[-1]
    report = check_hours(lake, [sc.H08, sc.H09])
    assert report.holds
    statuses = {(r.hour, r.kafka_partition, e.name): e.status for r in report.rows for e in r.equations}
    assert set(statuses.values()) == {"ok"}  # Silver and Gold both ran: nothing pending
    total = {e.name: 0 for e in EQUATIONS}
    for r in report.rows:
        for e in r.equations:
            total[e.name] += e.left
    bronze = sum(
        pq.read_metadata(os.path.join(d, f)).num_rows
        for d, _, fs in os.walk(lake + "/bronze")
        for f in fs
        if f.endswith(".parquet")
    )
    assert total["ingest"] == total["silver"] == bronze  # every Bronze row of both hours
    silver_rows_of_day = query(f"SELECT count(*) AS n FROM silver_telemetry WHERE event_date = DATE '{DAY}'", lake)
    assert total["gold"] == silver_rows_of_day["n"][0].as_py()


def test_the_recorded_rows_hold_the_jobs_figures_and_sql_reads_them(lake):
    rows = {(r["hour"], r["kafka_partition"]): r for r in ledger_rows(lake)}
    s1 = rows[(sc.H08, 4)]  # S1's signals: paired positions, a repeated lat, a bad soc, a lone lat
    assert (s1["bronze_rows"], s1["paired_positions"], s1["duplicates"], s1["quarantined"]) == (14, 2, 1, 2)
    assert s1["silver_new"] + s1["quarantined"] + s1["duplicates"] + s1["paired_positions"] == s1["bronze_rows"]
    assert s1["offsets_first"] == 0 and s1["offsets_last"] == 13 and s1["kafka_topic"] == "vehicle-telemetry"
    assert s1["silver_published_at"] is not None and s1["gold_published_at"] is not None
    by_sql = query(
        "SELECT sum(bronze_rows) AS bronze, sum(silver_new) AS new, sum(gold_event_count) AS gold "
        f"FROM ledger_hours WHERE day = DATE '{DAY}'",
        lake,
    ).to_pylist()[0]
    assert by_sql["bronze"] == sum(r["bronze_rows"] or 0 for r in rows.values())
    assert by_sql["gold"] == sum(r["gold_event_count"] or 0 for r in rows.values())


def test_json_output_has_integer_figures_and_every_equation(lake, capsys):
    rc, out, _ = ledger(lake, capsys, "--hour", sc.H08, "--format", "json")
    body = json.loads(out)
    assert rc == 0 and body["balanced"] is True and body["hours"] == [sc.H08]
    row = body["rows"][0]
    assert [e["name"] for e in row["equations"]] == ["ingest", "silver", "gold"]
    assert all(isinstance(v, int) for e in row["equations"] for v in (e["left"], e["right"], *e["terms"].values()))


@pytest.mark.slow
def test_running_an_hour_again_rewrites_its_rows_never_doubles_them(lake_copy, capsys):
    before = ledger_rows(lake_copy)
    silver(lake_copy, sc.H08)  # Silver holds all of it already: nothing new is inserted
    gold(lake_copy)
    after = ledger_rows(lake_copy)
    figures = [c for c in before[0] if not c.endswith("_published_at")]
    assert [{c: r[c] for c in figures} for r in after] == [{c: r[c] for c in figures} for r in before]
    assert ledger(lake_copy, capsys, "--date", DAY)[0] == 0


def test_a_silver_row_dropped_behind_the_jobs_backs_is_an_imbalance(lake_copy, capsys):
    DeltaTable(LakePaths(lake_copy).table("silver_telemetry")).delete("vehicle_id = 'V1' AND event_id = 'e5'")
    rc, out, err = ledger(lake_copy, capsys, "--hour", sc.H08)
    assert rc == 6
    assert "silver: bronze_rows = silver_new + quarantined + duplicates + paired_positions" in err
    assert "gold: gold_event_count = silver_rows" in err  # Gold still counts the row Silver lost
    assert "partition 0" in err and "IMBALANCE" in out


def test_a_row_dropped_between_silver_and_gold_is_an_imbalance_of_the_gold_equation(lake_copy, capsys):
    path = LakePaths(lake_copy).table("gold_vehicle_hourly")
    rows = delta_dataset(path).to_table()
    rows = rows.set_column(
        rows.schema.get_field_index("event_count"),
        "event_count",
        pc.if_else(pc.equal(rows["vehicle_id"], "V1"), pc.subtract(rows["event_count"], 1), rows["event_count"]),
    )
    write_deltalake(path, rows.select(HOURLY.names).cast(HOURLY), mode="overwrite", partition_by=["event_date"])
    rc, _, err = ledger(lake_copy, capsys, "--date", DAY)
    assert rc == 6
    assert "gold: gold_event_count = silver_rows does not hold for hour 2026-03-01T08 partition 0" in err
    assert "silver:" not in err and "ingest:" not in err


def test_a_bronze_file_with_a_row_removed_is_an_imbalance_of_the_ingest_equation(lake_copy, capsys):
    directory = LakePaths(lake_copy).bronze_hour(ms("08:00:00"))
    name = next(n for n in sorted(os.listdir(directory)) if n.startswith("p0000-"))
    table = pq.read_table(f"{directory}/{name}")
    pq.write_table(table.slice(0, table.num_rows - 1), f"{directory}/{name}")
    rc, _, err = ledger(lake_copy, capsys, "--hour", sc.H08)
    assert rc == 6
    assert "ingest: offsets_consumed = bronze_rows + rejects" in err and "partition 0" in err
    assert "silver: bronze_rows" in err  # Silver published a row Bronze no longer holds


@pytest.mark.slow
def test_late_rows_are_explained_until_gold_runs_again(lake_copy, capsys):
    b = BronzeBuilder(lake_copy)
    ingest = ms("10:05:00")
    b.snapshot("V1", "late1", ms("08:30:00"), ingest, partition=0, offset=100, location=sc._loc(52.1))
    b.write()
    silver(lake_copy, "2026-03-01T10")
    report = check_hours(lake_copy, [sc.H08, "2026-03-01T10"])
    assert report.holds
    late = [e for r in report.rows for e in r.equations if e.status == "late"]
    assert len(late) == 1 and "1 Silver row(s) arrived after Gold" in late[0].note
    assert ledger(lake_copy, capsys, "--date", DAY)[0] == 0
    gold(lake_copy)  # the recompute the DAG triggers
    assert {e.status for r in check_hours(lake_copy, [sc.H08]).rows for e in r.equations} == {"ok"}


def test_forgetting_a_vehicle_is_an_explained_change(lake_copy, capsys):
    forget_vehicle(lake_copy, "V1", reason="test", requested_by="pytest", progress=lambda _: None)
    rc, out, _ = ledger(lake_copy, capsys, "--date", DAY)
    assert rc == 0, out
    rows = {(r.hour, r.kafka_partition): r.figures for r in check_hours(lake_copy, [sc.H08]).rows}
    assert rows[(sc.H08, 0)]["erased_bronze"] > 0 and rows[(sc.H08, 0)]["erased_silver"] > 0
    # forgetting again deletes nothing and counts nothing twice
    forget_vehicle(lake_copy, "V1", reason="test", requested_by="pytest", progress=lambda _: None)
    assert ledger(lake_copy, capsys, "--date", DAY)[0] == 0


def test_a_recorded_gap_is_consumed_offsets_not_an_imbalance(lake_copy, capsys):
    gaps = os.path.join(lake_copy, "_ledger", "gaps")
    os.makedirs(gaps)
    gap = {"generation": 0, "topic": "vehicle-telemetry", "partition": 7, "first_offset": 0, "last_offset": 4}
    with open(os.path.join(gaps, "g0000-p0007-0-4.json"), "w") as f:
        json.dump({**gap, "records": 5, "hour": sc.H08}, f)
    report = check_hours(lake_copy, [sc.H08])
    p7 = next(r for r in report.rows if r.kafka_partition == 7)
    assert p7.figures["gap_records"] == 5 and p7.figures["offsets_consumed"] == 5
    assert report.holds


def test_an_hour_with_nothing_is_a_one_line_error_and_bad_flags_exit_2(lake, capsys):
    rc, _, err = ledger(lake, capsys, "--hour", "2026-03-05T08")
    assert rc == 4 and "nothing to account for" in err
    assert ledger(lake, capsys, "--hour", "yesterday")[0] == 2


@pytest.mark.slow
def test_the_silver_run_record_adds_up_with_paired_positions(lake_copy):
    for hour in (sc.H08, sc.H09):  # H09 again: every row it brings is in Silver already
        report = run_silver(SilverOptions(lake_copy, hour, gate=False))
        published = silver_published({"summary": report.summary(), **dataclasses.asdict(report)})
        parts = ("rows_out", "already_in_silver", "quarantined", "duplicates", "positions_paired")
        assert published["rows_in"] == sum(published[p] for p in parts), published
    assert published["already_in_silver"] > 0 and published["rows_out"] == 0


def test_the_dags_ledger_gate_raises_naming_the_equation(lake_copy):
    assert ledger_gate(lake_copy, hours_of_day(dt.date(2026, 3, 1)))["rows"] > 0
    DeltaTable(LakePaths(lake_copy).table("silver_quarantine")).delete("reason = 'invalid_soc'")
    with pytest.raises(LedgerImbalance, match=r"silver: bronze_rows = silver_new \+ quarantined"):
        ledger_gate(lake_copy, [sc.H08])


def _hot_minutes(root: str, hour: str) -> dict:
    """What a hot path that agrees with Silver holds: (vehicle, minute) -> events of the hour."""
    rows = query(
        "SELECT vehicle_id, date_trunc('minute', event_ts) AS minute, count(*) AS n FROM silver_telemetry "
        f"WHERE date_trunc('hour', event_ts) = TIMESTAMPTZ '{hour[:10]} {hour[11:]}:00:00+00' GROUP BY ALL",
        root,
    )
    return {(r["vehicle_id"], r["minute"]): r["n"] for r in rows.to_pylist()}


def _fill_hot(dsn: str, minutes: dict) -> None:
    conn = hot_store.connect(dsn)
    hot_store.migrate(conn)
    with conn.cursor() as cur:
        hot_store.ensure_day_partitions(cur, [dt.date(2026, 3, 1)], set())
        cur.execute(f"DELETE FROM {hot_store.TABLES['telemetry_1m']}")
        for (vehicle, minute), n in minutes.items():
            cur.execute(
                f"INSERT INTO {hot_store.TABLES['telemetry_1m']} (vehicle_id, window_start, event_count) "
                "VALUES (%s, %s, %s)",
                (vehicle, minute, n),
            )
    conn.commit()
    conn.close()


def test_the_hot_paths_counts_are_compared_and_a_difference_is_reported(lake, capsys):
    with fresh_hot_store() as dsn:
        minutes = _hot_minutes(lake, sc.H08)
        _fill_hot(dsn, minutes)
        rc, out, _ = ledger(lake, capsys, "--hour", sc.H08, "--hot-dsn", dsn)
        assert rc == 0 and "2026-03-01T08 hot path: 1-minute counts" in out and ": explained" in out
        vehicle, minute = sorted(minutes)[0]
        _fill_hot(dsn, {**minutes, (vehicle, minute): minutes[(vehicle, minute)] + 1})  # one event counted twice
        rc, out, _ = ledger(lake, capsys, "--hour", sc.H08, "--hot-dsn", dsn, "--format", "json")
        hot = json.loads(out)["hot_path"][0]
        assert rc == 0  # a report, not an imbalance: the hot path reads the topic on its own
        assert hot["explained"] is False and hot["unexplained_by_vehicle"] == {vehicle: 1}
    rc, out, _ = ledger(lake, capsys, "--hour", sc.H08, "--hot-dsn", dsn, "--format", "json")
    assert rc == 0 and json.loads(out)["hot_path"] is None  # the database is gone: nothing to compare with
