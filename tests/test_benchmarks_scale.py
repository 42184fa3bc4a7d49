"""The scale benchmark (``benchmarks.scale``) runs end to end, tiny; its measures and verdicts are right.

Speed itself is measured by the benchmark, never here: these tests only
check that it runs, that its peak memory covers every process of a run, and
that a missed target is reported as MISSED.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUMMARY = (
    r"scale {layer} {events}: [\d,]+ events/s, duckdb [\d,]+ events/s, ratio \d+\.\d\d{spark}, "
    r"peak MB job \d+ duckdb \d+{spark_peak}"
)


@pytest.fixture(scope="module")
def benchmarks_path():
    sys.path.insert(0, str(REPO))
    yield
    sys.path.remove(str(REPO))


def _scale(*args: str, timeout: int = 900) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return [line for line in done.stdout.splitlines() if line.strip()]


def test_sizes_are_read_with_suffixes(benchmarks_path):
    from benchmarks.scale import parse_sizes

    assert parse_sizes("1M,5M,20M") == [1_000_000, 5_000_000, 20_000_000]
    assert parse_sizes("2.5K, 3000") == [2_500, 3_000]


def test_peak_memory_sums_every_process_of_a_run(benchmarks_path, tmp_path):
    from benchmarks.measure import run_child

    script = tmp_path / "two.py"
    script.write_text(
        "import subprocess, sys\n"
        "held = bytearray(150 << 20)\n"
        "subprocess.run([sys.executable, '-c', 'import time; b = bytearray(200 << 20); time.sleep(1.5)'])\n"
    )
    run = run_child([sys.executable, str(script)])
    assert run.returncode == 0
    assert run.processes == 2
    assert run.tree_peak_rss_mb >= 340, run  # both processes at once: 150 + 200 MB and two interpreters
    assert run.tree_peak_rss_mb > run.peak_rss_mb + 100  # more than either process alone


def test_a_missed_target_is_named(benchmarks_path):
    from benchmarks.measure import ChildRun
    from benchmarks.scale import Measured, targets

    def took(seconds: float, peak_mb: float) -> ChildRun:
        return ChildRun([], seconds, peak_mb, 0, "", "", seconds, peak_mb, 1)

    small = Measured("silver", 1_000_000, took(10, 1000), took(4, 900), took(30, 2000))
    large = Measured("silver", 20_000_000, took(300, 5000), took(50, 2000), took(200, 3000))
    lines = targets([small, large], memory_bound_mb=4096)
    assert "met    silver 1,000,000: peak 1,000 MB <= 4,096" in lines
    assert "MISSED silver 20,000,000: peak 5,000 MB <= 4,096" in lines
    assert "met    silver 1,000,000: 0.40x DuckDB >= 0.4" in lines
    assert "MISSED silver 20,000,000: 0.17x DuckDB >= 0.5" in lines
    assert "MISSED silver 20,000,000: 0.67x faster than PySpark local[2] (> 1)" in lines
    assert "MISSED silver: 20,000,000 takes 30.0x the time of 1,000,000 (<= 22.0x)" in lines


@pytest.mark.slow
def test_scale_benchmark_runs_two_tiny_sizes(tmp_path):
    lines = _scale("--sizes", "5K,10K", "--no-spark", "--work-dir", str(tmp_path))
    # Silver's lines name the Bronze hour's events; Gold's the Silver rows the hour left (fewer).
    for layer, sizes in (("silver", ("5000", "10000")), ("gold", (r"\d+", r"\d+"))):
        found = [
            line
            for line in lines
            if any(re.fullmatch(SUMMARY.format(layer=layer, events=n, spark="", spark_peak=""), line) for n in sizes)
        ]
        assert len(found) == 2, lines[-6:]
    assert any(line.strip().startswith(("met", "MISSED")) and "takes" in line for line in lines), lines
    assert sum("agrees with every peer's" in line for line in lines) == 4, lines
    # The second run reuses each size's Bronze hour.
    again = _scale("--sizes", "5K", "--layers", "silver", "--no-spark", "--work-dir", str(tmp_path))
    assert any("reusing the Bronze hour" in line for line in again), again


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("pyspark") is None or shutil.which("java") is None,
    reason="the PySpark peer needs the bench extra (pip install -e '.[bench]') and Java 17+",
)
def test_the_pyspark_peer_agrees_with_the_jobs_row_for_row(tmp_path):
    lines = _scale("--sizes", "5K", "--work-dir", str(tmp_path), timeout=1800)
    spark = r", spark [\d,]+ events/s, ratio \d+\.\d\d"
    for layer in ("silver", "gold"):
        assert any(
            re.fullmatch(SUMMARY.format(layer=layer, events=r"\d+", spark=spark, spark_peak=r" spark \d+"), line)
            for line in lines
        ), lines[-6:]
    assert sum("agrees with every peer's" in line for line in lines) == 2, lines
