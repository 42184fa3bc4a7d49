"""``python -m benchmarks.merge_growth [--sizes 1000000,5000000,10000000]``

What one hour's Silver commit costs as Silver grows. delta-rs users report
MERGE running out of memory on large tables (delta-rs issues 2573, 2802,
4422); the Silver job restricts its MERGE to the ``event_date`` partitions
its batch can collide with, so its cost should follow those partitions, not
the table.

1. One realistic Bronze hour of ``--batch-events`` (``benchmarks.bronze_hour``)
   is cleaned with the job's own parse and clean steps (untimed) into the
   batch a Silver run commits.
2. A Silver table is filled, commit after commit, with synthetic rows spread
   evenly over ``--days`` ``event_date`` partitions ending on the batch's
   day, plus ``--duplicate-share`` of the batch's own rows (a redelivery the
   MERGE must recognise).
3. At each size, a fresh process runs the job's commit
   (``beam_pipelines.silver.commit.commit_hour``, no gate) and reports its
   time and its peak memory above what it held before the commit; then the
   table is restored to the version before, so every size commits the same
   batch against the same kind of table. With ``--compare-unpruned`` (the
   default) the same MERGE without the partition predicate runs too, as the
   reference of what the predicate saves.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from benchmarks.bronze_hour import build_bronze_hour
from benchmarks.measure import PeakMemory, child_env, python_module, run_child
from lake_core.storage import delta_dataset
from lake_schemas import LakePaths
from lake_schemas.geohash import encode_arrow
from lake_schemas.rules import DEDUP_KEY, GEOHASH_PRECISION
from lake_schemas.tables import SILVER_SCHEMA, TS

DAY_MS = 86_400_000
FILLER_VEHICLES = 5000


# -- the batch --------------------------------------------------------------------------------------------


def build_batch(work: str, events: int, seed: int, out_dir: str) -> dict:
    """Clean a simulated Bronze hour with the job's steps; store the batch under ``out_dir``; describe it."""
    from beam_pipelines.silver.clean import clean_batch
    from beam_pipelines.silver.parse import parse_bronze
    from lake_core.bronze.hour_files import list_bronze_hour, read_bronze_file
    from lake_core.registry import read_registry
    from lake_schemas.paths import parse_hour

    bronze = build_bronze_hour(work, events, seed=seed)
    print(bronze.describe(), flush=True)
    hour = list_bronze_hour(work, int(parse_hour(bronze.hour).timestamp() * 1000))
    parsed = pa.concat_tables(
        [parse_bronze(read_bronze_file(work, f"{hour.directory}/{name}"), name) for name in hour.files]
    )
    registry = read_registry(work).select(["vehicle_id", "vehicle_type"])
    batch = clean_batch(parsed, registry, bronze.hour)
    os.makedirs(out_dir, exist_ok=True)
    _write_ipc(batch.silver, os.path.join(out_dir, "silver.arrow"))
    _write_ipc(batch.quarantine, os.path.join(out_dir, "quarantine.arrow"))
    meta = {
        "hour": bronze.hour,
        "dates": sorted(d.isoformat() for d in batch.dates),
        "stats": batch.stats,
        "silver_rows": batch.silver.num_rows,
        "quarantine_rows": batch.quarantine.num_rows,
    }
    with open(os.path.join(out_dir, "batch.json"), "w") as f:
        json.dump(meta, f)
    return meta


def _write_ipc(table: pa.Table, path: str) -> None:
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def load_batch(directory: str):
    """The stored batch as the ``clean.CleanBatch`` the commit takes, and its Bronze hour."""
    from beam_pipelines.silver.clean import CleanBatch

    with open(os.path.join(directory, "batch.json")) as f:
        meta = json.load(f)
    tables = [
        pa.ipc.open_file(pa.memory_map(os.path.join(directory, f"{n}.arrow"))).read_all()
        for n in ("silver", "quarantine")
    ]
    dates = frozenset(_dt.date.fromisoformat(d) for d in meta["dates"])
    return CleanBatch(tables[0], tables[1], dates, meta["stats"]), meta["hour"]


# -- the table it lands in --------------------------------------------------------------------------------


def filler_rows(first_id: int, rows: int, last_day: _dt.date, days: int, rng: np.random.Generator) -> pa.Table:
    """``rows`` synthetic Silver rows (ids ``first_id``...), spread over the ``days`` days ending ``last_day``."""
    ids = np.arange(first_id, first_id + rows)
    day0 = int(_dt.datetime.combine(last_day, _dt.time(), _dt.timezone.utc).timestamp() * 1000) - (days - 1) * DAY_MS
    event_ms = day0 + (ids % days) * DAY_MS + rng.integers(0, DAY_MS, rows)
    lat = np.round(52.52 + rng.normal(0, 0.03, rows), 6)
    lon = np.round(13.405 + rng.normal(0, 0.05, rows), 6)
    vehicle = pc.binary_join_element_wise(
        "F", pc.utf8_lpad(pa.array(ids % FILLER_VEHICLES).cast(pa.string()), 5, "0"), ""
    )
    columns = {
        "vehicle_id": vehicle,
        "event_id": pc.binary_join_element_wise("fill-", pa.array(ids).cast(pa.string()), ""),
        "event_ts": pa.array(event_ms).cast(TS),
        "ingest_ts": pa.array(event_ms + 400).cast(TS),
        "event_date": pc.cast(pa.array(event_ms).cast(TS), pa.date32()),
        "ts_corrected": pa.array(np.zeros(rows, dtype=bool)),
        "source_shape": pa.array(np.full(rows, "snapshot", dtype=object), pa.string()),
        "lat": pa.array(lat),
        "lon": pa.array(lon),
        "soc_pct": pa.array(np.round(rng.uniform(5, 100, rows), 1)),
        "speed_kmh": pa.array(np.round(rng.uniform(0, 25, rows), 1)),
        "in_use": pa.array(rng.random(rows) < 0.3),
        "zone_id": encode_arrow(pa.array(lat), pa.array(lon), pa.array(np.ones(rows, dtype=bool)), GEOHASH_PRECISION),
        "vehicle_type": pa.array(np.full(rows, "scooter", dtype=object), pa.string()),
        "schema_version": pa.array(np.ones(rows, dtype=np.int32)),
        "kafka_partition": pa.array((ids % 8).astype(np.int32)),
        "kafka_offset": pa.array(ids),
    }
    return pa.table(
        [columns[f.name] if f.name in columns else pa.nulls(rows, f.type) for f in SILVER_SCHEMA], schema=SILVER_SCHEMA
    )


class SilverFiller:
    """Grows the Silver table at ``lake_root`` with filler rows, one append commit per ``rows_per_commit``."""

    def __init__(self, lake_root: str, last_day: _dt.date, days: int, rows_per_commit: int, seed: int):
        from beam_pipelines.silver.commit import silver_table

        self.path = LakePaths(lake_root).table("silver_telemetry")
        self.table = silver_table(lake_root)  # created with the job's own schema and partitioning
        self.last_day, self.days, self.rows_per_commit = last_day, days, rows_per_commit
        self.rng = np.random.default_rng(seed)
        self.rows = 0
        self.commits = 0

    def append(self, table: pa.Table) -> None:
        from deltalake import write_deltalake

        write_deltalake(self.path, table, mode="append", partition_by=["event_date"])
        self.rows += table.num_rows
        self.commits += 1

    def grow_to(self, rows: int) -> None:
        while self.rows < rows:
            n = min(self.rows_per_commit, rows - self.rows)
            self.append(filler_rows(self.rows, n, self.last_day, self.days, self.rng))

    def version(self) -> int:
        from deltalake import DeltaTable

        return DeltaTable(self.path).version()

    def restore(self, version: int) -> None:
        from deltalake import DeltaTable

        DeltaTable(self.path).restore(version)


def rows_in(lake_root: str, dates) -> int:
    """Rows of Silver in the ``event_date`` partitions ``dates``."""
    dataset = delta_dataset(LakePaths(lake_root).table("silver_telemetry"))
    return dataset.count_rows(filter=ds.field("event_date").isin(pa.array(sorted(dates), pa.date32())))


# -- one measured commit, in its own process --------------------------------------------------------------


def child(mode: str, lake_root: str, batch_dir: str) -> dict:
    """Commit the stored batch (``commit``: the job's commit; ``unpruned``: the MERGE without its predicate)."""
    from beam_pipelines.silver.commit import commit_hour, silver_table

    batch, hour = load_batch(batch_dir)
    silver_table(lake_root)  # opening the table (and importing deltalake) is not the commit's cost
    started = time.perf_counter()
    with PeakMemory() as memory:
        if mode == "commit":
            result = commit_hour(lake_root, batch, hour, gate=None)
            inserted, already = result.inserted, result.already_in_silver
        else:
            metrics = (
                silver_table(lake_root)
                .merge(
                    batch.silver,
                    predicate=" AND ".join(f"t.{k} = s.{k}" for k in DEDUP_KEY),
                    source_alias="s",
                    target_alias="t",
                )
                .when_not_matched_insert_all()
                .execute()
            )
            inserted = int(metrics.get("num_target_rows_inserted", 0))
            already = batch.silver.num_rows - inserted
    seconds = time.perf_counter() - started
    return {
        "mode": mode,
        "seconds": seconds,
        "peak_mb": memory.peak_mb,
        "rss_before_mb": memory.before_mb,
        "inserted": inserted,
        "already_in_silver": already,
    }


def measure(mode: str, lake_root: str, batch_dir: str) -> dict:
    run = run_child(
        python_module("benchmarks.merge_growth", "--child", mode, "--lake-root", lake_root, "--batch", batch_dir),
        child_env(),
    )
    run.check(f"the {mode} run")
    return json.loads(run.last_line())


# -- the benchmark ----------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes",
        default="1000000,5000000,10000000",
        help="Silver rows before the commit, comma-separated, ascending (default 1M,5M,10M)",
    )
    ap.add_argument("--days", type=int, default=60, help="event_date partitions the rows spread over (default 60)")
    ap.add_argument("--batch-events", type=int, default=100_000, help="Bronze rows of the hour committed")
    ap.add_argument(
        "--duplicate-share", type=float, default=0.05, help="share of the batch's rows already in Silver (default 0.05)"
    )
    ap.add_argument("--rows-per-commit", type=int, default=500_000, help="filler rows per append commit")
    ap.add_argument("--skip-unpruned", action="store_true", help="do not run the MERGE without its predicate")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work-dir", help="keep the lake here instead of a temporary directory")
    ap.add_argument("--child", choices=["commit", "unpruned"], help=argparse.SUPPRESS)
    ap.add_argument("--lake-root", help=argparse.SUPPRESS)
    ap.add_argument("--batch", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return args
    try:
        args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes must be whole numbers separated by commas, not {args.sizes!r}")
    if args.sizes != sorted(args.sizes) or args.sizes[0] < 1:
        ap.error("--sizes must be positive and ascending")
    if not 0.0 <= args.duplicate_share <= 1.0:
        ap.error("--duplicate-share must be between 0 and 1")
    if args.days < 1 or args.rows_per_commit < 1 or args.batch_events < 1000:
        ap.error("--days and --rows-per-commit must be positive, --batch-events at least 1000")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.lake_root, args.batch)))
        return
    work = args.work_dir or tempfile.mkdtemp(prefix="lake-bench-merge-")
    try:
        run(args, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: str) -> None:
    batch_dir = os.path.join(work, "batch")
    print(f"building and cleaning a Bronze hour of {args.batch_events:,} events (the batch to commit)", flush=True)
    meta = build_batch(os.path.join(work, "bronze"), args.batch_events, args.seed, batch_dir)
    dates = [_dt.date.fromisoformat(d) for d in meta["dates"]]
    batch_day = max(dates)
    print(
        f"  batch: {meta['silver_rows']:,} Silver rows, {meta['quarantine_rows']:,} quarantine rows; "
        f"MERGE predicate covers {len(dates)} partition(s): {', '.join(meta['dates'])}",
        flush=True,
    )

    lake = os.path.join(work, "lake")
    filler = SilverFiller(lake, batch_day, args.days, args.rows_per_commit, args.seed)
    batch, _ = load_batch(batch_dir)
    dups = batch.silver.take(
        np.flatnonzero(np.random.default_rng(args.seed).random(batch.silver.num_rows) < args.duplicate_share)
    )
    filler.append(dups)
    print(
        f"  {dups.num_rows:,} of the batch's rows put into Silver first (redeliveries the MERGE must find)", flush=True
    )
    quarantine = LakePaths(lake).table("silver_quarantine")
    results = []
    for size in args.sizes:
        started = time.perf_counter()
        filler.grow_to(size)
        print(
            f"Silver grown to {filler.rows:,} rows over {args.days} days ({filler.commits} commits) in "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
        version = filler.version()
        row = {"size": filler.rows, "touched_rows": rows_in(lake, dates)}
        modes = ["commit"] + ([] if args.skip_unpruned else ["unpruned"])
        for mode in modes:
            m = measure(mode, lake, batch_dir)
            filler.restore(version)
            shutil.rmtree(quarantine, ignore_errors=True)
            if m["already_in_silver"] != dups.num_rows:
                sys.exit(
                    f"merge: the {mode} run found {m['already_in_silver']:,} rows already in Silver, "
                    f"expected {dups.num_rows:,}"
                )
            row[mode] = m
            print(
                f"  {mode:8s} {m['seconds']:6.2f}s  peak +{m['peak_mb']:,.0f} MB  ({m['inserted']:,} inserted, "
                f"{m['already_in_silver']:,} already there)",
                flush=True,
            )
        results.append(row)
    report(results, len(dates), args.skip_unpruned)


def report(results: list, partitions: int, skip_unpruned: bool) -> None:
    print(
        "\nresults: one hour's Silver commit (MERGE restricted to the batch's event_date partitions) by table "
        "size; peak = RSS above the process's RSS before the commit. Shared machine: expect noise."
    )
    head = (
        f"  {'silver rows':>12} {'rows in the ' + str(partitions) + ' partition(s)':>28} {'commit s':>9} {'peak MB':>8}"
    )
    if not skip_unpruned:
        head += f" {'unpruned s':>11} {'peak MB':>8}"
    print(head)
    for r in results:
        line = (
            f"  {r['size']:>12,} {r['touched_rows']:>28,} {r['commit']['seconds']:>9.2f} "
            f"{r['commit']['peak_mb']:>8,.0f}"
        )
        if not skip_unpruned:
            line += f" {r['unpruned']['seconds']:>11.2f} {r['unpruned']['peak_mb']:>8,.0f}"
        print(line)
    first, last = results[0], results[-1]
    grow = last["size"] / first["size"]
    touched = last["touched_rows"] / max(first["touched_rows"], 1)
    t = last["commit"]["seconds"] / first["commit"]["seconds"]
    mem = last["commit"]["peak_mb"] / max(first["commit"]["peak_mb"], 1.0)
    print(
        f"merge: table x{grow:.1f} ({first['size']:,} -> {last['size']:,} rows), touched partitions x{touched:.1f}: "
        f"commit time x{t:.2f} ({first['commit']['seconds']:.2f}s -> {last['commit']['seconds']:.2f}s), "
        f"peak memory x{mem:.2f} ({first['commit']['peak_mb']:,.0f} -> {last['commit']['peak_mb']:,.0f} MB)"
    )


if __name__ == "__main__":
    main()
