"""``python -m benchmarks.gold --events 1000000``

Builds one realistic Bronze hour (as ``benchmarks.silver`` does) and runs
``lake silver`` on it, untimed, for its input: the Silver day that job
produced. Then it times on the same Silver files, each in its own process:

- ``lake gold --date D``, as the daily DAG runs it (quality gate on): the
  headline;
- ``lake gold --date D --no-gate``;
- the same definitions in plain DuckDB SQL (``benchmarks.gold_sql``), writing
  the three tables as Parquet.

Then it checks that ``gold/vehicle_hourly``, ``gold/zone_hourly`` and
``gold/vehicle_state`` hold the baseline's rows (floats within 1e-9), and
exits non-zero when they do not. The last line is
``gold: <N> events/s, duckdb <M> events/s, ratio <R>`` (N: Silver rows of
the day per second of the gated job; ``--gate off`` makes it the ungated one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter

from benchmarks.bronze_hour import build_bronze_hour, copy_inputs
from benchmarks.compare import differences, read_parquet_dir
from benchmarks.job_vs_sql import best_of, fail_on_differences, parse_args, print_results, time_job
from benchmarks.measure import child_env, lake_command, python_module, run_child
from benchmarks.silver import run_lake_silver
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.tables import GOLD_VEHICLE_HOURLY_SCHEMA, GOLD_VEHICLE_STATE_SCHEMA, GOLD_ZONE_HOURLY_SCHEMA

#: Gold table -> (its key, its columns)
GOLD_OUTPUTS = {
    "gold_vehicle_hourly": (["vehicle_id", "hour_start"], GOLD_VEHICLE_HOURLY_SCHEMA.names),
    "gold_zone_hourly": (["zone_id", "hour_start"], GOLD_ZONE_HOURLY_SCHEMA.names),
    "gold_vehicle_state": (["vehicle_id"], GOLD_VEHICLE_STATE_SCHEMA.names),
}
GOLD_INPUTS = ("silver_telemetry", "dims_vehicles")


def busiest_day(lake_root: str):
    """``(event_date, rows)`` of the Silver day with most rows (skewed clocks can spill onto another day)."""
    dates = delta_dataset(LakePaths(lake_root).table("silver_telemetry")).to_table(columns=["event_date"])
    return Counter(dates["event_date"].to_pylist()).most_common(1)[0]


def run_lake_gold(lake_root: str, day: str, gate: bool):
    flags = [] if gate else ["--no-gate"]
    run = run_child(lake_command("gold", "--lake-root", lake_root, "--date", day, *flags), child_env())
    return run.check(f"lake gold{'' if gate else ' --no-gate'}")


def run_duckdb_gold(lake_root: str, day: str, out_dir: str):
    shutil.rmtree(out_dir, ignore_errors=True)
    run = run_child(
        python_module("benchmarks.gold_sql", "--lake-root", lake_root, "--date", day, "--out", out_dir), child_env()
    )
    return run.check("the DuckDB Gold baseline")


def check_agreement(lake_root: str, out_dir: str) -> list[str]:
    """Differences between the job's three Gold tables and the baseline's (empty: they agree)."""
    found = []
    for name, (key, columns) in GOLD_OUTPUTS.items():
        ours = delta_dataset(LakePaths(lake_root).table(name)).to_table()
        theirs = read_parquet_dir(os.path.join(out_dir, name.removeprefix("gold_")), columns)
        found += differences(name, ours, theirs, key, columns)
    return found


def main(argv=None) -> None:
    args = parse_args(argv, __doc__.split("\n\n")[0])
    work = args.work_dir or tempfile.mkdtemp(prefix="lake-bench-gold-")
    try:
        source = os.path.join(work, "source")
        print(f"building a Bronze hour of {args.events:,} events under {source}", flush=True)
        bronze = build_bronze_hour(source, args.events, seed=args.seed)
        print(bronze.describe(), flush=True)
        print("running lake silver for Gold's input (untimed)", flush=True)
        print(f"  {run_lake_silver(source, bronze.hour, gate=False).last_line()}", flush=True)
        day, silver_rows = busiest_day(source)
        day = day.isoformat()
        print(f"  Gold's input: Silver day {day}, {silver_rows:,} rows", flush=True)

        runs = time_job(
            args,
            work,
            "lake gold",
            lambda root: copy_inputs(source, root, GOLD_INPUTS),
            lambda root, gate: run_lake_gold(root, day, gate),
        )
        print("timing the DuckDB baseline", flush=True)
        duck_dir = os.path.join(work, "duckdb")
        duck = best_of(args.repeat, lambda i: run_duckdb_gold(source, day, duck_dir))
        counts = json.loads(duck.last_line())
        print(
            f"  {duck.seconds:.2f}s: {counts['silver_rows']:,} silver rows -> {counts['vehicle_hourly']:,} "
            f"vehicle hours, {counts['zone_hourly']:,} zone hours, {counts['vehicle_state']:,} vehicles",
            flush=True,
        )

        print("checking that the two outputs agree, row for row", flush=True)
        checked = os.path.join(work, f"lake-{'gate' if runs.gated is not None else 'nogate'}-0")
        found = check_agreement(checked, duck_dir)
        if counts["silver_rows"] != silver_rows:
            found.append(f"the baseline read {counts['silver_rows']:,} Silver rows of {day}, not {silver_rows:,}")
        fail_on_differences("gold", found)
        print(
            f"  agree: {counts['vehicle_hourly']:,} vehicle hours, {counts['zone_hourly']:,} zone hours, "
            f"{counts['vehicle_state']:,} vehicle states",
            flush=True,
        )
        print_results("gold", "lake gold", silver_rows, runs, duck, args.repeat)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
