"""``python -m benchmarks.ledger_cost --before DIR --after DIR [--events 1000000] [--repeat 3]``

What the conservation ledger and the lineage columns (issue 14) cost the
Silver and Gold jobs: the same Bronze hour (``benchmarks.bronze_hour``), run
through ``lake silver`` and then ``lake gold`` (``--no-gate`` unless ``--gate``) by two
checkouts of the repository (``git worktree add``): ``--before`` without
them, ``--after`` with them. The two alternate, run after run, each in its
own process on a fresh copy of the inputs (with ``--together`` both at the
same time, which is what keeps the ratio honest on a machine other work
slows by a factor of three from one minute to the next); the fastest run of
each counts, and the result is their ratio. A ``--before`` checkout of the current code:
``git worktree add /tmp/before HEAD && git -C /tmp/before apply benchmarks/ledger_off.patch``
(the ledger's writes and counts off, Silver without the lineage columns but ``sender_ts``, which
deduplication needs). Also: Silver's bytes on disk (the lineage columns' cost in
size), and the ledger's own write (``record_silver_hour``) timed alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.bronze_hour import build_bronze_hour, copy_inputs


def _run(checkout: str, *args: str) -> float:
    return _run_together([(checkout, args)])[0]


def _run_together(runs: list) -> list:
    """Start every ``(checkout, lake args)`` at once; the seconds each took (a shared machine's load hits all)."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lake.cli", *args],
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": checkout},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for checkout, args in runs
    ]
    seconds = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                seconds[i] = time.perf_counter() - started
                pending.discard(i)
        time.sleep(0.05)
    for (checkout, args), proc in zip(runs, procs):
        if proc.returncode != 0:
            raise SystemExit(f"{args[0]} in {checkout} failed:\n{proc.stdout.read()[-3000:]}")
    return seconds


def _bytes(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(directory) for f in fs if f.endswith(".parquet")
    )


def _ledger_write_seconds(checkout: str, lake_root: str, hour: str) -> float:
    """``record_silver_hour`` alone, as the job calls it (counts from a rerun are the same figures)."""
    code = (
        "import time, sys\n"
        "from lake_core import ledger\n"
        "t = time.perf_counter()\n"
        f"ledger.record_silver_hour({lake_root!r}, {hour!r}, duplicates={{}}, paired={{}}, candidates={{}})\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": checkout},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="a checkout without the ledger")
    ap.add_argument("--after", required=True, help="a checkout with the ledger")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--together", action="store_true", help="run before and after at the same time (the fairest on a busy machine)"
    )
    ap.add_argument(
        "--gate",
        action="store_true",
        help="run the jobs with their quality gates, as the DAGs and benchmarks.silver/gold do (default: without, "
        "which leaves the ledger nothing to overlap with)",
    )
    ap.add_argument("--work-dir", help="keep the lakes here; a Bronze hour already built there is reused")
    args = ap.parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix="lake-bench-ledger-")
    try:
        source = os.path.join(work, "source")
        built = os.path.join(work, "source.hour")
        if os.path.exists(built):
            with open(built) as f:
                hour = f.read().strip()
        else:
            print(f"building a Bronze hour of {args.events:,} events", flush=True)
            hour = build_bronze_hour(source, args.events, seed=args.seed).hour
            with open(built, "w") as f:
                f.write(hour)
        day = hour[:10]
        times: dict = {(v, job): [] for v in ("before", "after") for job in ("silver", "gold")}
        sizes: dict = {}
        for i in range(args.repeat):
            roots = {v: os.path.join(work, f"lake-{v}") for v in ("before", "after")}
            for root in roots.values():
                shutil.rmtree(root, ignore_errors=True)
                copy_inputs(source, root)
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for job, flags in (("silver", ["--hour", hour]), ("gold", ["--date", day])):
                gate = () if args.gate else ("--no-gate",)
                runs = [(getattr(args, v), (job, "--lake-root", roots[v], *flags, *gate)) for v in order]
                if args.together:
                    seconds = _run_together(runs)
                else:
                    seconds = [_run(*run[:1], *run[1]) for run in runs]
                for v, t in zip(order, seconds):
                    times[(v, job)].append(t)
            for v in order:
                sizes[v] = _bytes(os.path.join(roots[v], "silver", "telemetry"))
                print(
                    f"  run {i + 1} {v:<6}: silver {times[(v, 'silver')][-1]:6.2f}s"
                    f"  gold {times[(v, 'gold')][-1]:6.2f}s",
                    flush=True,
                )
        ledger_alone = _ledger_write_seconds(args.after, os.path.join(work, "lake-after"), hour)
        for job in ("silver", "gold"):
            before, after = min(times[("before", job)]), min(times[("after", job)])
            print(
                f"{job}: before {before:.2f}s, after {after:.2f}s, ratio {after / before:.3f} "
                f"({args.events / before:,.0f} -> {args.events / after:,.0f} events/s)"
            )
        print(
            f"silver size: before {sizes['before']:,} B, after {sizes['after']:,} B, "
            f"ratio {sizes['after'] / sizes['before']:.3f}"
        )
        print(f"ledger write alone (record_silver_hour): {ledger_alone:.2f}s")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
