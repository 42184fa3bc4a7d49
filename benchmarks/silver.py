"""``python -m benchmarks.silver --events 1000000``

Builds one realistic Bronze hour (``benchmarks.bronze_hour``: both message
shapes, redeliveries, skewed clocks, every quarantine reason, unregistered
vehicles), then times on the same files, each in its own process:

- ``lake silver --hour H``, as the hourly DAG runs it (quality gate on):
  the headline;
- ``lake silver --hour H --no-gate`` (unless ``--skip-no-gate``);
- the same rules in plain DuckDB SQL (``benchmarks.silver_sql``), writing
  Parquet partitioned by ``event_date``.

Then it checks that Silver and the quarantine hold the baseline's rows, row
for row, and exits non-zero when they do not. The last line is
``silver: <N> events/s, duckdb <M> events/s, ratio <R>`` (N: Bronze rows
per second of the gated job).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from lake_schemas import LakePaths
from lake_schemas.storage import delta_dataset
from lake_schemas.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA

from .bronze_hour import build_bronze_hour, copy_inputs
from .compare import differences, read_parquet_dir
from .measure import child_env, lake_command, python_module, rate, run_child

SILVER_KEY = ["vehicle_id", "event_id"]
QUARANTINE_KEY = ["kafka_partition", "kafka_offset", "event_id", "reason"]


def run_lake_silver(lake_root: str, hour: str, gate: bool):
    flags = [] if gate else ["--no-gate"]
    run = run_child(lake_command("silver", "--lake-root", lake_root, "--hour", hour, *flags), child_env())
    return run.check(f"lake silver{' --no-gate' if not gate else ''}")


def run_duckdb_silver(lake_root: str, hour: str, out_dir: str):
    run = run_child(python_module("benchmarks.silver_sql", "--lake-root", lake_root, "--hour", hour,
                                  "--out", out_dir), child_env())
    run.check("the DuckDB Silver baseline")
    return run, json.loads(run.last_line())


def check_agreement(lake_root: str, out_dir: str) -> list[str]:
    """Differences between the job's Silver and quarantine and the baseline's (empty: they agree)."""
    paths = LakePaths(lake_root)
    ours = delta_dataset(paths.table("silver_telemetry")).to_table()
    theirs = read_parquet_dir(os.path.join(out_dir, "silver"), SILVER_SCHEMA.names)
    found = differences("silver_telemetry", ours, theirs, SILVER_KEY, SILVER_SCHEMA.names)
    ours_q = delta_dataset(paths.table("silver_quarantine")).to_table()
    theirs_q = read_parquet_dir(os.path.join(out_dir, "quarantine"), QUARANTINE_SCHEMA.names)
    return found + differences("silver_quarantine", ours_q, theirs_q, QUARANTINE_KEY, QUARANTINE_SCHEMA.names)


def parse_args(argv, description: str):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--events", type=int, default=1_000_000, help="Bronze rows in the hour (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-no-gate", action="store_true", help="time only the gated job (the DAG's default)")
    ap.add_argument("--work-dir", help="keep the lakes here instead of a temporary directory")
    args = ap.parse_args(argv)
    if args.events < 1000:
        ap.error("--events must be at least 1000")
    return args


def main(argv=None) -> None:
    args = parse_args(argv, __doc__.split("\n\n")[0])
    work = args.work_dir or tempfile.mkdtemp(prefix="lake-bench-silver-")
    try:
        source = os.path.join(work, "source")
        print(f"building a Bronze hour of {args.events:,} events under {source}", flush=True)
        bronze = build_bronze_hour(source, args.events, seed=args.seed)
        print(bronze.describe(), flush=True)
        events = bronze.rows

        print("timing lake silver (quality gate on, as the hourly DAG runs it)", flush=True)
        gated_root = os.path.join(work, "lake-gate")
        copy_inputs(source, gated_root)
        gated = run_lake_silver(gated_root, bronze.hour, gate=True)
        print(f"  {gated.last_line()}", flush=True)
        ungated = None
        if not args.skip_no_gate:
            print("timing lake silver --no-gate", flush=True)
            ungated_root = os.path.join(work, "lake-nogate")
            copy_inputs(source, ungated_root)
            ungated = run_lake_silver(ungated_root, bronze.hour, gate=False)
        print("timing the DuckDB baseline", flush=True)
        duck_dir = os.path.join(work, "duckdb")
        duck, counts = run_duckdb_silver(source, bronze.hour, duck_dir)
        print(f"  duckdb: {counts['silver_rows']:,} silver rows, {counts['quarantine_rows']:,} quarantined",
              flush=True)

        print("checking that the two outputs agree, row for row", flush=True)
        found = check_agreement(gated_root, duck_dir)
        if found:
            for line in found:
                print(f"  DISAGREE {line}", flush=True)
            sys.exit(f"silver: the job's output and the DuckDB baseline's disagree ({len(found)} difference(s))")
        print(f"  agree: {counts['silver_rows']:,} Silver rows and {counts['quarantine_rows']:,} quarantine rows",
              flush=True)

        job_rate, duck_rate = rate(events, gated.seconds), rate(events, duck.seconds)
        print("\nresults (wall time of each process, interpreter start and imports included; "
              "shared machine: expect noise)")
        print(f"  lake silver (gate on)     {gated.seconds:7.2f}s  {job_rate:>10,.0f} events/s  "
              f"peak RSS {gated.peak_rss_mb:,.0f} MB")
        if ungated is not None:
            print(f"  lake silver --no-gate     {ungated.seconds:7.2f}s  {rate(events, ungated.seconds):>10,.0f} "
                  f"events/s  peak RSS {ungated.peak_rss_mb:,.0f} MB  (gate: {gated.seconds - ungated.seconds:+.2f}s)")
        print(f"  duckdb baseline           {duck.seconds:7.2f}s  {duck_rate:>10,.0f} events/s  "
              f"peak RSS {duck.peak_rss_mb:,.0f} MB")
        print(f"silver: {job_rate:,.0f} events/s, duckdb {duck_rate:,.0f} events/s, ratio {job_rate / duck_rate:.2f}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
