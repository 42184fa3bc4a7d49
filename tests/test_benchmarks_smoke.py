"""The batch benchmarks still run end to end, tiny: input, job, DuckDB baseline, agreement, last line.

Each benchmark runs as a user runs it (``python -m benchmarks.X`` from the
checkout). The agreement checks are then shown to bite: a baseline output
with one value changed or one row missing makes them report a difference
and the benchmark exit non-zero.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent
RESULT_LINE = r"{}: [\d,]+ events/s, duckdb [\d,]+ events/s, ratio \d+\.\d\d"


def bench(module: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return [line for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def benchmarks_path():
    sys.path.insert(0, str(REPO))
    yield
    sys.path.remove(str(REPO))


def _parquet_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.parquet"))


def _rewrite(path: Path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


@pytest.mark.slow
def test_silver_benchmark(tmp_path, benchmarks_path):
    lines = bench("silver", "--events", "5000", "--gate", "off", "--work-dir", str(tmp_path))
    assert re.fullmatch(RESULT_LINE.format("silver"), lines[-1]), lines[-1]
    assert any(line.startswith("  agree: ") for line in lines), lines
    assert "headline: lake silver, WITHOUT the quality gate (--gate off)" in lines[-2]

    from benchmarks.job_vs_sql import fail_on_differences
    from benchmarks.silver import check_agreement

    lake, duck = str(tmp_path / "lake-nogate-0"), tmp_path / "duckdb"
    assert check_agreement(lake, str(duck)) == []
    silver_file = _parquet_files(duck / "silver")[0]
    _rewrite(
        silver_file, lambda t: t.set_column(t.schema.get_field_index("soc_pct"), "soc_pct", pc.add(t["soc_pct"], 0.5))
    )
    found = check_agreement(lake, str(duck))
    assert any(f.startswith("silver_telemetry.soc_pct: ") for f in found), found
    # compared a range of vehicles at a time (how a 20M-event hour fits in memory): the same difference
    from benchmarks.compare import parquet_dataset, sliced_differences
    from benchmarks.silver import SILVER_KEY
    from lake_core.storage import delta_dataset
    from lake_schemas.tables import SILVER_SCHEMA

    ours = delta_dataset(f"{lake}/silver/telemetry")
    theirs = parquet_dataset(str(duck / "silver"), SILVER_SCHEMA.names)
    sliced = sliced_differences("silver_telemetry", ours, theirs, SILVER_KEY, SILVER_SCHEMA.names, slice_rows=1000)
    assert sliced and all(f.startswith("silver_telemetry[vehicles ") and ".soc_pct: " in f for f in sliced), sliced
    changed = sum(int(f.split(".soc_pct: ")[1].split(" rows")[0].replace(",", "")) for f in sliced)
    assert changed == sum(int(f.split(".soc_pct: ")[1].split(" rows")[0].replace(",", "")) for f in found)
    with pytest.raises(SystemExit, match="silver: the job's output and the DuckDB baseline's disagree"):
        fail_on_differences("silver", found)
    quarantine_file = _parquet_files(duck / "quarantine")[0]
    _rewrite(quarantine_file, lambda t: t.slice(1))
    found = check_agreement(lake, str(duck))
    assert any("silver_quarantine: " in f and "rows from the job" in f for f in found), found


@pytest.mark.slow
def test_gold_benchmark(tmp_path, benchmarks_path):
    lines = bench("gold", "--events", "5000", "--gate", "off", "--work-dir", str(tmp_path))
    assert re.fullmatch(RESULT_LINE.format("gold"), lines[-1]), lines[-1]
    assert any(line.startswith("  agree: ") for line in lines), lines

    from benchmarks.gold import check_agreement

    lake, duck = str(tmp_path / "lake-nogate-0"), tmp_path / "duckdb"
    assert check_agreement(lake, str(duck)) == []
    hourly = _parquet_files(duck / "vehicle_hourly")[0]

    def distance(t):
        return pa.array([v + 1e-6 if i == 0 else v for i, v in enumerate(t["distance_km"].to_pylist())])

    _rewrite(hourly, lambda t: t.set_column(t.schema.get_field_index("distance_km"), "distance_km", distance(t)))
    found = check_agreement(lake, str(duck))
    assert len(found) == 1 and found[0].startswith("gold_vehicle_hourly.distance_km: 1 rows differ"), found


@pytest.mark.slow
def test_merge_growth_benchmark():
    lines = bench(
        "merge_growth",
        "--sizes",
        "20000,60000",
        "--days",
        "10",
        "--batch-events",
        "2000",
        "--rows-per-commit",
        "20000",
        "--skip-unpruned",
    )
    assert re.fullmatch(
        r"merge: table x3\.0 \(20,\d{3} -> 60,\d{3} rows\), touched partitions x[\d.]+: "
        r"commit time x[\d.]+ .*, peak memory x[\d.]+ .*",
        lines[-1],
    ), lines[-1]
    commits = [line for line in lines if line.strip().startswith("commit ")]
    assert len(commits) == 2 and all("already there" in line for line in commits), lines


def test_merge_growth_refuses_bad_sizes():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.merge_growth", "--sizes", "5000000,1000000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 2 and "--sizes must be positive and ascending" in done.stderr
