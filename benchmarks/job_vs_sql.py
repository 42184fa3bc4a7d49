"""What ``benchmarks.silver`` and ``benchmarks.gold`` share: flags, timed runs, the results block.

Each contender runs in its own process on its own fresh copy of the input,
``--repeat`` times; the fastest run counts (on a shared machine the
slower ones measure the neighbours). The headline is the job as its DAG runs
it, quality gate on, unless ``--gate off`` was asked for; the results block
says which.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

from benchmarks.measure import ChildRun, rate

__all__ = ["parse_args", "JobRuns", "time_job", "best_of", "print_results", "fail_on_differences"]


def parse_args(argv, description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--events", type=int, default=1_000_000, help="Bronze rows in the hour (default 1,000,000)")
    ap.add_argument(
        "--gate",
        choices=["both", "on", "off"],
        default="both",
        help="time the job with its quality gate (on, the DAG's way: the headline), without it (off), "
        "or both (default)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of each contender; the fastest counts (default 1)")
    ap.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    ap.add_argument("--work-dir", help="keep the lakes here instead of a temporary directory")
    args = ap.parse_args(argv)
    if args.events < 1000:
        ap.error("--events must be at least 1000")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    return args


def best_of(repeat: int, run: Callable[[int], ChildRun]) -> ChildRun:
    """The fastest of ``repeat`` calls of ``run(attempt)``."""
    return min((run(i) for i in range(repeat)), key=lambda r: r.seconds)


@dataclass
class JobRuns:
    gated: Optional[ChildRun] = None
    ungated: Optional[ChildRun] = None

    @property
    def headline(self) -> ChildRun:
        return self.gated if self.gated is not None else self.ungated


def time_job(
    args, work: str, job: str, fresh_lake: Callable[[str], None], run: Callable[[str, bool], ChildRun]
) -> JobRuns:
    """Time ``run(lake_root, gate)`` as ``--gate`` asks, each attempt on a lake ``fresh_lake(root)`` made."""
    runs = JobRuns()
    for gate in ([True] if args.gate != "off" else []) + ([False] if args.gate != "on" else []):
        label = f"{job}{'' if gate else ' --no-gate'}"
        print(f"timing {label}{' (quality gate on, as its DAG runs it)' if gate else ''}", flush=True)

        def attempt(i: int, gate=gate) -> ChildRun:
            root = os.path.join(work, f"lake-{'gate' if gate else 'nogate'}-{i}")
            fresh_lake(root)
            done = run(root, gate)
            print(f"  {done.seconds:.2f}s: {done.last_line()}", flush=True)
            return done

        best = best_of(args.repeat, attempt)
        if gate:
            runs.gated = best
        else:
            runs.ungated = best
    return runs


def fail_on_differences(layer: str, found: list) -> None:
    """Print every difference and exit non-zero, when there is any."""
    if not found:
        return
    for line in found:
        print(f"  DISAGREE {line}", flush=True)
    sys.exit(f"{layer}: the job's output and the DuckDB baseline's disagree ({len(found)} difference(s))")


def print_results(layer: str, job: str, events: int, runs: JobRuns, duck: ChildRun, repeat: int) -> None:
    """The results block, then the required last line."""
    best = f", fastest of {repeat}" if repeat > 1 else ""
    print(
        f"\nresults ({events:,} events; wall time of each process{best}, interpreter start and imports "
        f"included; shared machine: expect noise)"
    )

    def line(label: str, r: ChildRun, extra: str = "") -> None:
        print(
            f"  {label:28s} {r.seconds:7.2f}s  {rate(events, r.seconds):>10,.0f} events/s  "
            f"cpu {r.cpu_seconds:6.2f}s  peak RSS {r.tree_peak_rss_mb:,.0f} MB in {r.processes} process(es){extra}"
        )

    if runs.gated is not None:
        line(f"{job} (gate on)", runs.gated)
    if runs.ungated is not None:
        gate_cost = (
            f"  (the gate costs {runs.gated.seconds - runs.ungated.seconds:+.2f}s)" if runs.gated is not None else ""
        )
        line(f"{job} --no-gate", runs.ungated, gate_cost)
    line("duckdb baseline", duck)
    which = "gate on, as the DAG runs it" if runs.gated is not None else "WITHOUT the quality gate (--gate off)"
    print(f"  headline: {job}, {which}")
    job_rate, duck_rate = rate(events, runs.headline.seconds), rate(events, duck.seconds)
    print(f"{layer}: {job_rate:,.0f} events/s, duckdb {duck_rate:,.0f} events/s, ratio {job_rate / duck_rate:.2f}")
