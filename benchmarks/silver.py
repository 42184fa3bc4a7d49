"""``python -m benchmarks.silver --events 1000000``

Builds one realistic Bronze hour (``benchmarks.bronze_hour``: both message
shapes, redeliveries, skewed clocks, every quarantine reason, unregistered
vehicles), then times on the same files, each in its own process:

- ``lake silver --hour H``, as the hourly DAG runs it (quality gate on):
  the headline;
- ``lake silver --hour H --no-gate``;
- the same rules in plain DuckDB SQL (``benchmarks.silver_sql``), writing
  Parquet partitioned by ``event_date``.

Then it checks that Silver and the quarantine hold the baseline's rows, row
for row, and exits non-zero when they do not. The last line is
``silver: <N> events/s, duckdb <M> events/s, ratio <R>`` (N: Bronze rows
per second of the gated job; ``--gate off`` makes it the ungated one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from benchmarks.bronze_hour import build_bronze_hour, copy_inputs
from benchmarks.compare import differences, parquet_dataset, read_parquet_dir, sliced_differences
from benchmarks.job_vs_sql import best_of, fail_on_differences, parse_args, print_results, time_job
from benchmarks.measure import child_env, lake_command, python_module, run_child
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA

SILVER_KEY = ["vehicle_id", "event_id"]
QUARANTINE_KEY = ["kafka_partition", "kafka_offset", "event_id", "reason"]


def run_lake_silver(lake_root: str, hour: str, gate: bool):
    flags = [] if gate else ["--no-gate"]
    run = run_child(lake_command("silver", "--lake-root", lake_root, "--hour", hour, *flags), child_env())
    return run.check(f"lake silver{'' if gate else ' --no-gate'}")


def run_duckdb_silver(lake_root: str, hour: str, out_dir: str):
    shutil.rmtree(out_dir, ignore_errors=True)
    run = run_child(
        python_module("benchmarks.silver_sql", "--lake-root", lake_root, "--hour", hour, "--out", out_dir), child_env()
    )
    return run.check("the DuckDB Silver baseline")


def check_agreement(lake_root: str, out_dir: str) -> list[str]:
    """Differences between the job's Silver and quarantine and the baseline's (empty: they agree)."""
    paths = LakePaths(lake_root)
    ours = delta_dataset(paths.table("silver_telemetry"))
    theirs = parquet_dataset(os.path.join(out_dir, "silver"), SILVER_SCHEMA.names)
    found = sliced_differences("silver_telemetry", ours, theirs, SILVER_KEY, SILVER_SCHEMA.names)
    ours_q = delta_dataset(paths.table("silver_quarantine")).to_table()
    theirs_q = read_parquet_dir(os.path.join(out_dir, "quarantine"), QUARANTINE_SCHEMA.names)
    return found + differences("silver_quarantine", ours_q, theirs_q, QUARANTINE_KEY, QUARANTINE_SCHEMA.names)


def main(argv=None) -> None:
    args = parse_args(argv, __doc__.split("\n\n")[0])
    work = args.work_dir or tempfile.mkdtemp(prefix="lake-bench-silver-")
    try:
        source = os.path.join(work, "source")
        print(f"building a Bronze hour of {args.events:,} events under {source}", flush=True)
        bronze = build_bronze_hour(source, args.events, seed=args.seed)
        print(bronze.describe(), flush=True)

        runs = time_job(
            args,
            work,
            "lake silver",
            lambda root: copy_inputs(source, root),
            lambda root, gate: run_lake_silver(root, bronze.hour, gate),
        )
        print("timing the DuckDB baseline", flush=True)
        duck_dir = os.path.join(work, "duckdb")
        duck = best_of(args.repeat, lambda i: run_duckdb_silver(source, bronze.hour, duck_dir))
        counts = json.loads(duck.last_line())
        print(
            f"  {duck.seconds:.2f}s: {counts['silver_rows']:,} silver rows, {counts['quarantine_rows']:,} quarantined",
            flush=True,
        )

        print("checking that the two outputs agree, row for row", flush=True)
        checked = os.path.join(work, f"lake-{'gate' if runs.gated is not None else 'nogate'}-0")
        fail_on_differences("silver", check_agreement(checked, duck_dir))
        print(
            f"  agree: {counts['silver_rows']:,} Silver rows and {counts['quarantine_rows']:,} quarantine rows",
            flush=True,
        )
        print_results("silver", "lake silver", bronze.rows, runs, duck, args.repeat)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
