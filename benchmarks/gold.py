"""``python -m benchmarks.gold --events 1000000``

Builds one realistic Bronze hour (as ``benchmarks.silver`` does) and runs
``lake silver`` on it, untimed, for its input: the Silver day that job
produced. Then it times on the same Silver files, each in its own process:

- ``lake gold --date D``, as the daily DAG runs it (quality gate on): the
  headline;
- ``lake gold --date D --no-gate`` (unless ``--skip-no-gate``);
- the same definitions in plain DuckDB SQL (``benchmarks.gold_sql``), writing
  the three tables as Parquet.

Then it checks that ``gold/vehicle_hourly``, ``gold/zone_hourly`` and
``gold/vehicle_state`` hold the baseline's rows (floats within 1e-9), and
exits non-zero when they do not. The last line is
``gold: <N> events/s, duckdb <M> events/s, ratio <R>`` (N: Silver rows of
the day per second of the gated job).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter

from lake_schemas import LakePaths
from lake_schemas.storage import delta_dataset
from lake_schemas.tables import GOLD_VEHICLE_HOURLY_SCHEMA, GOLD_VEHICLE_STATE_SCHEMA, GOLD_ZONE_HOURLY_SCHEMA

from .bronze_hour import build_bronze_hour, copy_inputs
from .compare import differences, read_parquet_dir
from .measure import child_env, lake_command, python_module, rate, run_child
from .silver import parse_args, run_lake_silver

#: Gold table -> (its key, its columns)
GOLD_OUTPUTS = {
    "gold_vehicle_hourly": (["vehicle_id", "hour_start"], GOLD_VEHICLE_HOURLY_SCHEMA.names),
    "gold_zone_hourly": (["zone_id", "hour_start"], GOLD_ZONE_HOURLY_SCHEMA.names),
    "gold_vehicle_state": (["vehicle_id"], GOLD_VEHICLE_STATE_SCHEMA.names),
}


def busiest_day(lake_root: str):
    """The ``event_date`` holding most Silver rows (an hour's skewed clocks can spill onto another day)."""
    dates = delta_dataset(LakePaths(lake_root).table("silver_telemetry")).to_table(columns=["event_date"])
    return Counter(dates["event_date"].to_pylist()).most_common(1)[0]


def run_lake_gold(lake_root: str, day: str, gate: bool):
    flags = [] if gate else ["--no-gate"]
    run = run_child(lake_command("gold", "--lake-root", lake_root, "--date", day, *flags), child_env())
    return run.check(f"lake gold{' --no-gate' if not gate else ''}")


def run_duckdb_gold(lake_root: str, day: str, out_dir: str):
    run = run_child(python_module("benchmarks.gold_sql", "--lake-root", lake_root, "--date", day, "--out", out_dir),
                    child_env())
    run.check("the DuckDB Gold baseline")
    return run, json.loads(run.last_line())


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
        print(f"  Gold input: Silver day {day}, {silver_rows:,} rows", flush=True)

        print("timing lake gold (quality gate on, as the daily DAG runs it)", flush=True)
        gated_root = os.path.join(work, "lake-gate")
        copy_inputs(source, gated_root, ("silver_telemetry", "dims_vehicles"))
        gated = run_lake_gold(gated_root, day, gate=True)
        print(f"  {gated.last_line()}", flush=True)
        ungated = None
        if not args.skip_no_gate:
            print("timing lake gold --no-gate", flush=True)
            ungated_root = os.path.join(work, "lake-nogate")
            copy_inputs(source, ungated_root, ("silver_telemetry", "dims_vehicles"))
            ungated = run_lake_gold(ungated_root, day, gate=False)
        print("timing the DuckDB baseline", flush=True)
        duck_dir = os.path.join(work, "duckdb")
        duck, counts = run_duckdb_gold(source, day, duck_dir)
        print(f"  duckdb: {counts['silver_rows']:,} silver rows -> {counts['vehicle_hourly']:,} vehicle hours, "
              f"{counts['zone_hourly']:,} zone hours, {counts['vehicle_state']:,} vehicles", flush=True)

        print("checking that the two outputs agree, row for row", flush=True)
        found = check_agreement(gated_root, duck_dir)
        if counts["silver_rows"] != silver_rows:
            found.append(f"the baseline read {counts['silver_rows']:,} Silver rows of {day}, not {silver_rows:,}")
        if found:
            for line in found:
                print(f"  DISAGREE {line}", flush=True)
            sys.exit(f"gold: the job's output and the DuckDB baseline's disagree ({len(found)} difference(s))")
        print(f"  agree: {counts['vehicle_hourly']:,} vehicle hours, {counts['zone_hourly']:,} zone hours, "
              f"{counts['vehicle_state']:,} vehicle states", flush=True)

        job_rate, duck_rate = rate(silver_rows, gated.seconds), rate(silver_rows, duck.seconds)
        print("\nresults (wall time of each process, interpreter start and imports included; "
              "shared machine: expect noise)")
        print(f"  lake gold (gate on)       {gated.seconds:7.2f}s  {job_rate:>10,.0f} events/s  "
              f"peak RSS {gated.peak_rss_mb:,.0f} MB")
        if ungated is not None:
            print(f"  lake gold --no-gate       {ungated.seconds:7.2f}s  {rate(silver_rows, ungated.seconds):>10,.0f} "
                  f"events/s  peak RSS {ungated.peak_rss_mb:,.0f} MB  (gate: {gated.seconds - ungated.seconds:+.2f}s)")
        print(f"  duckdb baseline           {duck.seconds:7.2f}s  {duck_rate:>10,.0f} events/s  "
              f"peak RSS {duck.peak_rss_mb:,.0f} MB")
        print(f"gold: {job_rate:,.0f} events/s, duckdb {duck_rate:,.0f} events/s, ratio {job_rate / duck_rate:.2f}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
