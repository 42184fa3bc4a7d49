"""``python -m benchmarks.ingest_metrics --events 300000 --rounds 3``

What the ingest's Prometheus metrics cost, and how fast ``/metrics`` answers
while the ingest works. Pre-produces snapshot messages once, then runs
``lake ingest --until-idle 1`` on a fresh lake, alternately without and with
``--metrics-port`` (A B A B ..., so drift in a shared machine's load hits
both alike); during the instrumented runs a scraper GETs ``/metrics`` every
second (Prometheus scrapes every 15 s) and times each answer. The Beam counters the metrics read (bytes,
rejects by reason, DLQ) are always on: "without" means no metrics server,
no pass hook, no scrapes. Last lines:
``overhead: <P> % (median <A> s without, <B> s with)`` and
``/metrics under load: p50 <X> ms, p95 <Y> ms, max <Z> ms over <N> scrapes``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from benchmarks.common import kafka, produce_snapshots
from lake_core.processes import free_port

IDLE_SECONDS = 1.0


def _run(bootstrap: str, topic: str, lake_root: str, metrics_port: int | None) -> tuple[float, list[float]]:
    lake = os.path.join(os.path.dirname(sys.executable), "lake")
    cmd = [
        lake,
        "ingest",
        "--lake-root",
        lake_root,
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--until-idle",
        str(IDLE_SECONDS),
    ]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    scrapes: list[float] = []
    stop = threading.Event()

    def scrape() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    answer = client.get(f"http://127.0.0.1:{metrics_port}/metrics")
                    if answer.status_code == 200 and b"lake_ingest_records_total" in answer.content:
                        scrapes.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    pass  # not listening yet (Beam's imports) or already gone
                stop.wait(1.0)

    scraper = threading.Thread(target=scrape, daemon=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if metrics_port is not None:
        scraper.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started - IDLE_SECONDS
    stop.set()
    if proc.returncode != 0:
        sys.exit(f"lake ingest failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    print(
        f"  {'with' if metrics_port else 'without'} metrics: {elapsed:.2f}s  {out.strip().splitlines()[-1]}", flush=True
    )
    return elapsed, scrapes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bootstrap", help="use this Kafka instead of a fresh embedded broker")
    args = ap.parse_args(argv)
    without, with_, scrapes = [], [], []
    with kafka(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory(prefix="lake-bench-") as work:
        topic, events, _ = produce_snapshots(bootstrap, args.events, args.partitions)
        for i in range(args.rounds):
            seconds, _ = _run(bootstrap, topic, os.path.join(work, f"plain-{i}"), None)
            without.append(seconds)
            seconds, times = _run(bootstrap, topic, os.path.join(work, f"metrics-{i}"), free_port())
            with_.append(seconds)
            scrapes += times
    a, b = statistics.median(without), statistics.median(with_)
    print(f"ingest: {events:,} events per run, {args.rounds} rounds")
    print(f"overhead: {100 * (b - a) / a:+.1f} % (median {a:.2f} s without, {b:.2f} s with)")
    if scrapes:
        ms = sorted(s * 1000 for s in scrapes)
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        print(
            f"/metrics under load: p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms "
            f"over {len(ms)} scrapes"
        )


if __name__ == "__main__":
    main()
