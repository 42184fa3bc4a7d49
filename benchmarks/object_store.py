"""``python -m benchmarks.object_store [--vehicles 20] [--duration 2h]``

The lake's steps on local disk and on S3 (moto's standalone server on loopback), same data, same
run: ``lake simulate`` fills a topic once (20 vehicles for 2 h: 144K messages, as in issue 16),
then each lake runs ``lake ingest --until-idle``, ``lake silver`` per hour, ``lake gold``,
``lake validate``, ``lake query``, ``lake maintain`` and ``lake forget``, each as its own process.

For each step it prints the wall time on disk and on S3 and their ratio, and, on S3, the requests
the step sent (counted from moto's request log, by kind) and the bytes that crossed the wire both
ways (headers included, counted by a TCP relay between the lake and moto). Ingest costs are also
given per 1M ingested events, Silver's per hour.

moto answers from memory on loopback: its requests cost well under a millisecond of network, far
less than a real region's 10-50 ms, so the S3 ratios here are a floor; the request counts carry
over. The machine's cores are shared with whatever else runs: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

import pyarrow.fs as pafs

from benchmarks.measure import child_env, lake_command, run_child
from lake.local import broker as embedded
from lake_core import kafka_admin
from lake_core.processes import free_port

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.moto_s3 import ByteRelay  # noqa: E402 - the tests' relay, from the checkout's tests/

H08, H09, DAY = "2026-03-01T08", "2026-03-01T09", "2026-03-01"
QUERY = "select count(*) from silver_telemetry where vehicle_id = 'V000001'"
_LOG_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.[01]" (\d{3})')


def _kind(method: str, target: str) -> str:
    query = target.partition("?")[2]
    if method == "GET" and "list-type" in query:
        return "LIST"
    if method == "POST" and ("uploads" in query or "uploadId" in query):
        return "MULTIPART"
    if method == "PUT" and "partNumber" in query:
        return "MULTIPART"
    return method


class Moto:
    """moto_server with its request log in a file."""

    def __init__(self, scratch: str):
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.port = free_port()
        self.log_path = os.path.join(scratch, "moto.log")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open for the server's lifetime
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("moto_server did not start (pip install 'moto[server]')")
                time.sleep(0.1)

    def requests(self) -> Counter:
        found: Counter = Counter()
        with open(self.log_path) as f:
            for line in f:
                m = _LOG_LINE.search(line)
                if m:
                    found[_kind(m.group(1), m.group(2))] += 1
        return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


def _steps(fleet: str) -> list:
    return [
        ("ingest", ["ingest", "--until-idle", "2", "--no-progress"]),
        (f"silver {H08}", ["silver", "--hour", H08]),
        (f"silver {H09}", ["silver", "--hour", H09]),
        ("gold", ["gold", "--date", DAY]),
        ("validate silver", ["validate", "silver", "--hour", H08]),
        ("query", ["query", QUERY]),
        ("maintain", ["maintain", "--vacuum-hours", "0", "--force"]),
        ("forget", ["forget", "--vehicle", fleet, "--reason", "benchmark"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--duration", default="2h")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="lake-bench-s3-")
    broker_dir = os.path.join(scratch, "broker")
    info = embedded.start_broker(broker_dir, port=free_port())
    kafka_admin.ensure_topics(info.bootstrap, ["vehicle-telemetry", "vehicle-telemetry-dlq"], partitions=8)
    moto = Moto(scratch)
    relay = ByteRelay(moto.port)
    try:
        local = os.path.join(scratch, "lake")
        env = child_env()
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=info.bootstrap,
            LAKE_TOPIC="vehicle-telemetry",
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ALLOW_HTTP="true",
            AWS_CONDITIONAL_PUT="etag",
        )
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        sim = run_child(
            lake_command(
                "simulate",
                "--lake-root",
                local,
                "--vehicles",
                str(args.vehicles),
                "--duration",
                args.duration,
                "--no-progress",
            ),
            env,
        ).check("lake simulate")
        print(sim.last_line(), flush=True)
        events = int(re.search(r"sent ([\d,]+) messages", sim.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
        import boto3  # noqa: PLC0415 - only this benchmark talks to S3 directly

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="lake")
        remote = "s3://lake/fleet"
        s3, _ = pafs.FileSystem.from_uri(remote)
        pafs.copy_files(f"{local}/dims", "lake/fleet/dims", pafs.LocalFileSystem(), s3)  # the registry simulate wrote
        rows = []
        for step, argv in _steps("V000003"):
            on_disk = run_child(lake_command(*argv[:1], "--lake-root", local, *argv[1:]), env).check(f"{step} (disk)")
            before_requests, before_bytes = moto.requests(), relay.counts()
            on_s3 = run_child(lake_command(*argv[:1], "--lake-root", remote, *argv[1:]), env).check(f"{step} (s3)")
            time.sleep(0.2)  # the log's last lines
            requests = moto.requests() - before_requests
            after = relay.counts()
            rows.append(
                (step, on_disk.seconds, on_s3.seconds, requests, after[0] - before_bytes[0], after[1] - before_bytes[1])
            )
            print(f"{step}: disk {on_disk.seconds:.1f} s, s3 {on_s3.seconds:.1f} s", flush=True)
        _report(rows, events)
    finally:
        moto.stop()
        embedded.stop_broker(broker_dir)
        shutil.rmtree(scratch, ignore_errors=True)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _report(rows: list, events: int) -> None:
    print(f"\n{events:,} events; 2 cores shared with other work; moto on loopback (a floor for real S3)")
    print(f"{'step':<18} {'disk s':>7} {'s3 s':>7} {'s3/disk':>7} {'requests':>9} {'up':>9} {'down':>9}  by kind")
    for step, disk, s3, requests, up, down in rows:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(requests.items()))
        total = sum(requests.values())
        print(f"{step:<18} {disk:7.1f} {s3:7.1f} {s3 / disk:7.2f} {total:9d} {_mb(up):>9} {_mb(down):>9}  {kinds}")
    ingest = rows[0]
    scale = 1_000_000 / events
    print(
        f"ingest per 1M events: {sum(ingest[3].values()) * scale:,.0f} requests, "
        f"{_mb(ingest[4] * scale)} up, {_mb(ingest[5] * scale)} down"
    )
    silver = [r for r in rows if r[0].startswith("silver")]
    per_hour = [sum(sum(r[3].values()) for r in silver) / len(silver), sum(r[4] for r in silver) / len(silver)]
    print(
        f"silver per hour: {per_hour[0]:,.0f} requests, {_mb(per_hour[1])} up, "
        f"{_mb(sum(r[5] for r in silver) / len(silver))} down"
    )


if __name__ == "__main__":
    main()
