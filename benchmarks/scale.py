"""``python -m benchmarks.scale --sizes 1M,5M,20M`` (``make bench-scale``)

Silver and Gold at fleet scale. For each size it builds one Bronze hour of
that many events (``benchmarks.bronze_hour``, written to disk as it is
simulated), then, each in its own process on the same files:

- ``lake silver --hour H`` (gate on, as the hourly DAG runs it), the DuckDB
  SQL baseline (``benchmarks.silver_sql``) and the PySpark ``local[2]`` peer
  (``benchmarks.spark_jobs silver``); both outputs are checked row for row
  against the job's;
- on the Silver the job wrote, ``lake gold --date D`` (gate on), DuckDB
  (``benchmarks.gold_sql``) and PySpark (``benchmarks.spark_jobs gold``),
  checked likewise.

For every run it prints the wall time, events/s, CPU time and the peak RSS
of all the run's processes (the job's gate helper, Spark's JVM and Python
workers: ``benchmarks.measure``). Then the targets of issue 15, each met or
MISSED: the job's peak under ``--memory-bound-mb`` (4 GB) at every size,
time linear in size (the largest size takes at most 1.1x its share of the
smallest's time), at least 0.4x DuckDB at 1M and 0.5x from 5M, faster than
PySpark at every size. The last lines are one per layer and size::

    scale silver 5000000: <N> events/s, duckdb <M> events/s, ratio <R>, spark <S> events/s, ratio <Q>,
        peak MB job <J> duckdb <D> spark <P>

On a shared machine absolute rates move with the neighbours; the ratios of
one run, measured back to back on the same files, are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional

from benchmarks.bronze_hour import BronzeInput, build_bronze_hour, copy_inputs
from benchmarks.gold import GOLD_INPUTS, busiest_day, run_duckdb_gold, run_lake_gold
from benchmarks.gold import check_agreement as gold_agreement
from benchmarks.job_vs_sql import fail_on_differences
from benchmarks.measure import ChildRun, child_env, python_module, rate, run_child
from benchmarks.silver import check_agreement as silver_agreement
from benchmarks.silver import run_duckdb_silver, run_lake_silver

__all__ = ["parse_sizes", "main"]

MEMORY_BOUND_MB = 4096
LINEAR_SLACK = 1.1  # 20M may take 22x what 1M takes
DUCKDB_RATIO = {"small": 0.4, "large": 0.5}  # at 1M; from 5M up
LARGE = 5_000_000


def parse_sizes(text: str) -> list[int]:
    """``"1M,5M,20M"`` (or plain numbers, ``K`` suffixes) -> ``[1000000, 5000000, 20000000]``."""
    sizes = []
    for part in text.split(","):
        part = part.strip().upper()
        scale = {"K": 1_000, "M": 1_000_000}.get(part[-1:], 1)
        sizes.append(int(float(part.rstrip("KM")) * scale))
    return sizes


@dataclass
class Measured:
    layer: str
    events: int
    job: ChildRun
    duck: ChildRun
    spark: Optional[ChildRun]
    hour_events: int = 0  # the Bronze hour's size (Gold's events are the Silver rows it left)


def run_spark(job: str, lake_root: str, key_flag: str, key: str, out_dir: str) -> ChildRun:
    shutil.rmtree(out_dir, ignore_errors=True)
    run = run_child(
        python_module("benchmarks.spark_jobs", job, "--lake-root", lake_root, key_flag, key, "--out", out_dir),
        child_env(),
    )
    return run.check(f"the PySpark {job} peer")


def _line(label: str, r: ChildRun, events: int) -> str:
    return (
        f"    {label:12s} {r.seconds:8.2f}s {rate(events, r.seconds):>10,.0f} events/s  cpu {r.cpu_seconds:7.2f}s  "
        f"peak RSS {r.tree_peak_rss_mb:>6,.0f} MB in {r.processes} process(es)"
    )


def _report(m: Measured) -> None:
    print(f"  {m.layer} at {m.events:,} events:", flush=True)
    print(_line(f"lake {m.layer}", m.job, m.events), flush=True)
    print(_line("duckdb", m.duck, m.events), flush=True)
    if m.spark is not None:
        print(_line("pyspark", m.spark, m.events), flush=True)


def silver_at(size: int, work: str, source, spark: bool) -> tuple[Measured, str]:
    lake = os.path.join(work, "silver-lake")
    shutil.rmtree(lake, ignore_errors=True)
    copy_inputs(source.lake_root, lake)
    print(f"  timing lake silver --hour {source.hour} (gate on)", flush=True)
    job = run_lake_silver(lake, source.hour, gate=True)
    print(f"    {job.seconds:.2f}s: {job.last_line()}", flush=True)
    print("  timing the DuckDB baseline", flush=True)
    duck_dir = os.path.join(work, "duckdb-silver")
    duck = run_duckdb_silver(source.lake_root, source.hour, duck_dir)
    print(f"    {duck.seconds:.2f}s: {duck.last_line()}", flush=True)
    fail_on_differences("silver (DuckDB)", silver_agreement(lake, duck_dir))
    shutil.rmtree(duck_dir, ignore_errors=True)
    peer = None
    if spark:
        print("  timing the PySpark local[2] peer", flush=True)
        spark_dir = os.path.join(work, "spark-silver")
        peer = run_spark("silver", source.lake_root, "--hour", source.hour, spark_dir)
        print(f"    {peer.seconds:.2f}s: {peer.last_line()}", flush=True)
        fail_on_differences("silver (PySpark)", silver_agreement(lake, spark_dir))
        shutil.rmtree(spark_dir, ignore_errors=True)
    print("    the job's output agrees with every peer's, row for row", flush=True)
    return Measured("silver", source.rows, job, duck, peer, source.rows), lake


def gold_at(silver_lake: str, work: str, spark: bool, hour_events: int = 0) -> Measured:
    day, rows = busiest_day(silver_lake)
    day = day.isoformat()
    lake = os.path.join(work, "gold-lake")
    shutil.rmtree(lake, ignore_errors=True)
    copy_inputs(silver_lake, lake, GOLD_INPUTS)
    print(f"  timing lake gold --date {day} ({rows:,} Silver rows, gate on)", flush=True)
    job = run_lake_gold(lake, day, gate=True)
    print(f"    {job.seconds:.2f}s: {job.last_line()}", flush=True)
    print("  timing the DuckDB baseline", flush=True)
    duck_dir = os.path.join(work, "duckdb-gold")
    shutil.rmtree(duck_dir, ignore_errors=True)
    duck = run_duckdb_gold(silver_lake, day, duck_dir)
    print(f"    {duck.seconds:.2f}s: {duck.last_line()}", flush=True)
    fail_on_differences("gold (DuckDB)", gold_agreement(lake, duck_dir))
    peer = None
    if spark:
        print("  timing the PySpark local[2] peer", flush=True)
        spark_dir = os.path.join(work, "spark-gold")
        peer = run_spark("gold", silver_lake, "--date", day, spark_dir)
        print(f"    {peer.seconds:.2f}s: {peer.last_line()}", flush=True)
        fail_on_differences("gold (PySpark)", gold_agreement(lake, spark_dir))
    print("    the job's output agrees with every peer's, row for row", flush=True)
    shutil.rmtree(lake, ignore_errors=True)
    return Measured("gold", rows, job, duck, peer, hour_events)


def targets(results: list, memory_bound_mb: float) -> list[str]:
    """Each target of issue 15 as one line, ``met`` or ``MISSED``."""
    lines = []

    def verdict(ok: bool) -> str:
        return "met   " if ok else "MISSED"

    for m in results:
        peak = m.job.tree_peak_rss_mb
        lines.append(
            f"{verdict(peak <= memory_bound_mb)} {m.layer} {m.events:,}: peak {peak:,.0f} MB <= {memory_bound_mb:,.0f}"
        )
        ratio = rate(m.events, m.job.seconds) / rate(m.events, m.duck.seconds)
        wanted = DUCKDB_RATIO["large" if max(m.events, m.hour_events) >= LARGE else "small"]
        lines.append(f"{verdict(ratio >= wanted)} {m.layer} {m.events:,}: {ratio:.2f}x DuckDB >= {wanted}")
        if m.spark is not None:
            lines.append(
                f"{verdict(m.job.seconds < m.spark.seconds)} {m.layer} {m.events:,}: "
                f"{m.spark.seconds / m.job.seconds:.2f}x faster than PySpark local[2] (> 1)"
            )
    for layer in ("silver", "gold"):
        runs = sorted((m for m in results if m.layer == layer), key=lambda m: m.events)
        if len(runs) >= 2:
            small, large = runs[0], runs[-1]
            allowed = LINEAR_SLACK * large.events / small.events
            grew = large.job.seconds / small.job.seconds
            lines.append(
                f"{verdict(grew <= allowed)} {layer}: {large.events:,} takes {grew:.1f}x the time of "
                f"{small.events:,} (<= {allowed:.1f}x)"
            )
    return lines


def summary_line(m: Measured) -> str:
    job, duck = rate(m.events, m.job.seconds), rate(m.events, m.duck.seconds)
    text = f"scale {m.layer} {m.events}: {job:,.0f} events/s, duckdb {duck:,.0f} events/s, ratio {job / duck:.2f}"
    if m.spark is not None:
        spark = rate(m.events, m.spark.seconds)
        text += f", spark {spark:,.0f} events/s, ratio {job / spark:.2f}"
    text += f", peak MB job {m.job.tree_peak_rss_mb:.0f} duckdb {m.duck.tree_peak_rss_mb:.0f}"
    if m.spark is not None:
        text += f" spark {m.spark.tree_peak_rss_mb:.0f}"
    return text


def _source(work: str, size: int, seed: int):
    """The Bronze hour of ``size`` events under ``work``, built once (kept across runs with ``--work-dir``)."""
    root = os.path.join(work, "source")
    done = os.path.join(work, "source.json")
    if os.path.exists(done):
        with open(done) as f:
            built = json.load(f)
        if built.get("events") == size and built.get("seed") == seed:
            print(f"  reusing the Bronze hour under {root}: {built['describe']}", flush=True)
            return BronzeInput(root, built["hour"], built["rows"], built["files"], 0, 0)
    shutil.rmtree(root, ignore_errors=True)
    print(f"  building a Bronze hour of {size:,} events under {root}", flush=True)
    bronze = build_bronze_hour(root, size, seed=seed)
    print(f"  {bronze.describe()}", flush=True)
    with open(done, "w") as f:
        json.dump(
            {
                "events": size,
                "seed": seed,
                "hour": bronze.hour,
                "rows": bronze.rows,
                "files": bronze.files,
                "describe": bronze.describe(),
            },
            f,
        )
    return bronze


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,5M,20M", help="events per hour, comma-separated (default 1M,5M,20M)")
    ap.add_argument("--layers", default="silver,gold", help="silver, gold or both (default both)")
    ap.add_argument("--no-spark", dest="spark", action="store_false", help="leave the PySpark peer out")
    ap.add_argument(
        "--spark-up-to",
        help="run the PySpark peer only at sizes up to this one (5M: Spark's 20M Silver takes over an hour here)",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--memory-bound-mb", type=float, default=MEMORY_BOUND_MB)
    ap.add_argument("--work-dir", help="keep inputs here (a second run reuses each size's Bronze hour)")
    args = ap.parse_args(argv)
    sizes, layers = parse_sizes(args.sizes), {p.strip() for p in args.layers.split(",")}
    if not layers <= {"silver", "gold"}:
        ap.error("--layers takes silver and/or gold")
    work = args.work_dir or tempfile.mkdtemp(prefix="lake-bench-scale-")
    results: list = []
    try:
        for size in sizes:
            print(f"\n== {size:,} events per hour", flush=True)
            here = os.path.join(work, str(size))
            os.makedirs(here, exist_ok=True)
            source = _source(here, size, args.seed)
            spark = args.spark and (not args.spark_up_to or size <= parse_sizes(args.spark_up_to)[0])
            measured, silver_lake = silver_at(size, here, source, spark)
            if "silver" in layers:
                results.append(measured)
                _report(measured)
            if "gold" in layers:
                results.append(gold_at(silver_lake, here, spark, source.rows))
                _report(results[-1])
            shutil.rmtree(silver_lake, ignore_errors=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(
        "\ntargets (wall time of each process, interpreter start included; peak RSS summed over each run's "
        "processes; shared machine: absolute rates are noisy, the ratios of one run are what count)"
    )
    for line in targets(results, args.memory_bound_mb):
        print(f"  {line}")
    print()
    for m in results:
        print(summary_line(m))


if __name__ == "__main__":
    main()
