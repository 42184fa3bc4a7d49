"""Rule 3 with no exceptions: one Silver row per (vehicle_id, event_id), the first ingested, whatever the
clocks (a corrected copy and a later one on other days) and the order or concurrency of the hours."""

from __future__ import annotations

import json
import threading

import pytest

from beam_pipelines.silver.options import SilverOptions
from beam_pipelines.silver.pipeline import run_silver
from lake_core.ledger import check_hours
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from support.bronze_builder import BronzeBuilder, ms

pytestmark = pytest.mark.slow  # each runs the Silver job two or three times


def silver(root: str, hour: str):
    return run_silver(SilverOptions(root, hour, gate=False))


def copies(root: str, vehicle: str, event_id: str) -> list:
    rows = delta_dataset(LakePaths(root).table("silver_telemetry")).to_table().to_pylist()
    return [r for r in rows if (r["vehicle_id"], r["event_id"]) == (vehicle, event_id)]


def snapshot(b: BronzeBuilder, event_id: str, sent: str, ingested: str, partition: int = 0, soc: float = 50.0):
    b.snapshot("V1", event_id, ms(sent), ms(ingested), partition=partition, battery={"soc_pct": soc})


@pytest.mark.parametrize(
    "redelivered",
    ["2026-03-04T10:00:00", "2026-03-12T10:00:00"],  # kept (2 days behind), corrected again (10 days behind)
)
def test_a_redelivery_days_later_of_an_event_whose_time_was_corrected(tmp_path, redelivered):
    root = str(tmp_path / "lake")
    b = BronzeBuilder(root)
    # The sender's clock is 40 minutes ahead: its time is replaced by the ingest time, on 2026-03-01.
    snapshot(b, "x1", "2026-03-02T00:30:00", "2026-03-01T23:50:00", soc=10)
    b.write()
    silver(root, "2026-03-01T23")
    first = copies(root, "V1", "x1")
    assert len(first) == 1 and first[0]["ts_corrected"] and str(first[0]["event_date"]) == "2026-03-01"
    assert first[0]["sender_ts"].isoformat().startswith("2026-03-02T00:30")
    snapshot(b, "x1", "2026-03-02T00:30:00", redelivered, partition=1, soc=99)
    b.write()
    hour = redelivered[:13]
    report = silver(root, hour)
    assert report.inserted == 0 and report.already_in_silver == 1
    assert [r["soc_pct"] for r in copies(root, "V1", "x1")] == [10]  # the first ingested, not the redelivery
    assert check_hours(root, ["2026-03-01T23", hour]).holds


def test_hours_published_out_of_order_keep_the_first_ingested_copy(tmp_path):
    root = str(tmp_path / "lake")
    b = BronzeBuilder(root)
    snapshot(b, "e1", "08:59:00", "08:59:30", soc=11)  # hour 08: the first copy, and one more event
    snapshot(b, "e2", "08:59:10", "08:59:40")
    snapshot(b, "e1", "08:59:00", "09:05:00", soc=22)  # hour 09: a redelivery
    b.write()
    silver(root, "2026-03-01T09")  # the later hour first
    assert [r["soc_pct"] for r in copies(root, "V1", "e1")] == [22]
    report = silver(root, "2026-03-01T08")
    assert report.counters["replaced"] == 1
    kept = copies(root, "V1", "e1")
    assert [(r["soc_pct"], r["bronze_hour"]) for r in kept] == [(11, "2026-03-01T08")]
    ledger = check_hours(root, ["2026-03-01T08", "2026-03-01T09"])
    assert ledger.holds, ledger.describe_imbalances()
    figures = {r.hour: r.figures for r in ledger.rows}
    assert (figures["2026-03-01T09"]["silver_new"], figures["2026-03-01T09"]["duplicates"]) == (0, 1)
    assert (figures["2026-03-01T08"]["silver_new"], figures["2026-03-01T08"]["duplicates"]) == (2, 0)
    silver(root, "2026-03-01T09")  # and again: nothing changes
    assert [r["soc_pct"] for r in copies(root, "V1", "e1")] == [11]
    assert check_hours(root, ["2026-03-01T08", "2026-03-01T09"]).holds


def test_concurrent_hours_with_the_same_event_keep_one_row_the_first_ingested(tmp_path):
    root = str(tmp_path / "lake")
    b = BronzeBuilder(root)
    for i in range(20):  # twenty events, each in both hours; hour 10's copy is the first ingested
        sent = f"10:{i:02d}:00"
        snapshot(b, f"c{i}", sent, f"10:{i:02d}:05", soc=1)
        snapshot(b, f"c{i}", sent, f"11:{i:02d}:05", partition=1, soc=2)
    b.write()
    errors = []

    def run(hour):
        try:
            silver(root, hour)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in ("2026-03-01T11", "2026-03-01T10")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = delta_dataset(LakePaths(root).table("silver_telemetry")).to_table().to_pylist()
    assert len(rows) == 20 and {r["soc_pct"] for r in rows} == {1.0}
    ledger = check_hours(root, ["2026-03-01T10", "2026-03-01T11"])
    assert ledger.holds, json.dumps(ledger.to_json())[:2000]
