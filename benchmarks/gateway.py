"""``python -m benchmarks.gateway [--seconds 10] [--workers 2] [--devices 100]``

The HTTP gateway under load from a loopback load generator, against a
plain baseline in the same run:

- throughput: ``wrk`` (C, closed loop, keep-alive connections; ``apt-get
  install wrk``) posts NDJSON batches of 100 snapshot messages, each
  request as one of ``--devices`` devices with its own secret, to (a) a bare
  Starlette endpoint on uvicorn that reads the body and answers 202 (no
  auth, no validation, no Kafka: the HTTP layer alone) and (b) ``lake
  gateway`` (auth, validation, rate buckets, produce, wait for Kafka's acks);
- latency: an open-loop paced generator (asyncio, raw HTTP/1.1 keep-alive
  connections, each request timed from its scheduled start, so a slow
  answer cannot hide the ones queued behind it) at half the measured
  gateway throughput: p50/p99/max;
- single-message requests per second (``wrk``, ``application/json``).

CPU per 10K messages is the gateway's processes' user + system time (the
broker's and the generator's are reported apart). The devices' rate limit is
raised (``--rate``) so that the figures measure throughput, not the
limiter; its bookkeeping stays on the path. The last line is
``gateway: <N> messages/s, baseline <M> messages/s, ratio <R>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import httpx
import psutil

from benchmarks.common import kafka
from lake_core import kafka_admin
from lake_core.devices import DeviceStore
from lake_core.processes import free_port

BATCH = 100
TARGET = 50_000  # messages/s (issue 11)
LAKE = os.path.join(os.path.dirname(sys.executable), "lake")

_BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def telemetry(request):
    body = b""
    async for chunk in request.stream():
        body += chunk
    return Response(b'{"accepted":%d}' % (body.count(b"\\n") + 1), 202, media_type="application/json")

app = Starlette(routes=[Route("/v1/telemetry", telemetry, methods=["POST"])])
"""

_WRK_SCRIPT = """
local requests = {}
local n = 0
function init(args)
  local f = io.open(args[1], "r")
  for line in f:lines() do
    local token, body = line:match("^(%S+) (.*)$")
    n = n + 1
    body = body:gsub("\\\\n", "\\n")
    requests[n] = wrk.format("POST", "/v1/telemetry",
      {["Authorization"] = "Bearer " .. token, ["Content-Type"] = args[2]}, body)
  end
  f:close()
  counter = math.random(n)
end
function request()
  counter = counter % n + 1
  return requests[counter]
end
"""


def snapshot(vehicle: str, i: int) -> bytes:
    """A full snapshot of contract section 1a (about 450 bytes)."""
    return json.dumps(
        {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "vehicle_id": vehicle,
            "ts": f"2026-03-01T08:{i // 60 % 60:02d}:{i % 60:02d}.250Z",
            "location": {"lat": 52.52 + i * 1e-5, "lon": 13.405, "alt_m": 34.0, "accuracy_m": 4.5},
            "battery": {"soc_pct": 81.5, "voltage_v": 48.1, "current_a": -3.2, "temp_c": 24.0, "charging": False},
            "motion": {"speed_kmh": 17.2, "heading_deg": 270.0, "accel_ms2": 0.3},
            "status": {"locked": False, "in_use": True, "ignition": True, "trip_id": "T-88"},
            "diagnostics": {"odometer_km": 1532.7, "error_codes": ["E12"]},
        },
        separators=(",", ":"),
    ).encode()


def requests_file(path: str, secrets: dict[str, str], per_request: int) -> tuple[int, list[tuple[str, bytes]]]:
    """One line per request for the wrk script (``token body``, newlines escaped); returns body bytes per request."""
    pairs = []
    with open(path, "w") as f:
        for vehicle, secret in secrets.items():
            body = b"\n".join(snapshot(vehicle, i) for i in range(per_request))
            pairs.append((secret, body))
            f.write(f"{secret} {body.decode().replace(chr(10), chr(92) + 'n')}\n")
    return sum(len(b) for _, b in pairs) // len(pairs), pairs


def run_wrk(url: str, script: str, requests: str, content_type: str, seconds: float, connections: int) -> dict:
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script, url]
        + ["--", requests, content_type],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    out = done.stdout
    if done.returncode != 0 or "Requests/sec" not in out:
        sys.exit(f"wrk failed: {done.stderr or out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": total,
        "non2xx": int(bad.group(1)) if bad else 0,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "seconds": seconds,
        "p99": re.search(r"99%\s+(\S+)", out).group(1),
        "socket_errors": errors.group(1) if errors else "",
    }


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def slow_checks(url: str) -> float:
    time.sleep(1.1)  # the workers share their figures every second
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(re.search(r"^lake_gateway_auth_slow_checks_total (\S+)$", text, re.M).group(1))


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    sys.exit(f"server at {url} did not answer in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def paced_latencies(port: int, pairs: list[tuple[str, bytes]], rate: float, seconds: float, conns: int):
    """Open loop: request i is due at start + i/rate; its latency counts from then. Returns (latencies, statuses)."""
    due = [i / rate for i in range(int(rate * seconds))]
    queue: asyncio.Queue = asyncio.Queue()
    for i, t in enumerate(due):
        queue.put_nowait((i, t))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter() + 0.2

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                i, t = queue.get_nowait()
                delay = start + t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                secret, body = pairs[i % len(pairs)]
                writer.write(
                    b"POST /v1/telemetry HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s"
                    % (secret.encode(), len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - (start + t))
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(conns)))
    return latencies, statuses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measured run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--connections", type=int, default=32, help="wrk connections for the batch runs")
    ap.add_argument("--bootstrap", help="use this Kafka instead of a fresh embedded broker")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="lake-bench-gateway-")
    try:
        with kafka(args.bootstrap) as bootstrap:
            _run(args, bootstrap, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, bootstrap: str, work: str) -> None:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(bootstrap, [topic, f"{topic}-dlq"], 8)
    broker = [p for p in psutil.process_iter(["name", "cmdline"]) if "tansu" in " ".join(p.info["cmdline"] or [])]
    lake_root = os.path.join(work, "lake")
    started = time.perf_counter()
    secrets = DeviceStore(lake_root).add_many([(f"B{i:05d}", "scooter") for i in range(args.devices)])
    print(f"{args.devices} devices registered in {time.perf_counter() - started:.1f}s", flush=True)
    script = os.path.join(work, "bench.lua")
    with open(script, "w") as f:
        f.write(_WRK_SCRIPT)
    batches = os.path.join(work, "batches.txt")
    batch_bytes, pairs = requests_file(batches, secrets, BATCH)
    singles = os.path.join(work, "singles.txt")
    requests_file(singles, secrets, 1)
    print(f"requests: NDJSON batches of {BATCH} messages ({batch_bytes:,} bytes), and single messages", flush=True)

    # (a) the baseline: the same HTTP stack, nothing behind it
    with open(os.path.join(work, "bare_app.py"), "w") as f:
        f.write(_BARE_APP)
    port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--workers", str(args.workers)]
        + ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, bare)
        run_wrk(url, script, batches, "application/x-ndjson", min(2, args.seconds), args.connections)  # warm-up
        base = run_wrk(url, script, batches, "application/x-ndjson", args.seconds, args.connections)
        base_single = run_wrk(url, script, singles, "application/json", args.seconds / 2, 64)
    finally:
        stop(bare)
    base_rate = (base["requests"] - base["non2xx"]) * BATCH / base["seconds"]
    print(
        f"baseline (bare Starlette, {args.workers} workers): {base['rps']:,.0f} batches/s = {base_rate:,.0f} msgs/s, "
        f"p99 {base['p99']}; single messages {base_single['rps']:,.0f} req/s",
        flush=True,
    )

    # (b) lake gateway
    port = free_port()
    log = open(os.path.join(work, "gateway.log"), "w")
    gateway = subprocess.Popen(
        [LAKE, "gateway", "--port", str(port), "--workers", str(args.workers), "--lake-root", lake_root]
        + ["--bootstrap", bootstrap, "--topic", topic, "--rate", "1000000", "--burst", "1000"]
        + ["--auth-checks-per-s", "1000"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/healthz", gateway)
        processes = [psutil.Process(gateway.pid)]
        processes += psutil.Process(gateway.pid).children(recursive=True)
        # warm-up: until every device's secret was checked (scrypt, ~45 ms) once in each worker
        deadline = time.monotonic() + 120
        while slow_checks(url) < args.devices * args.workers and time.monotonic() < deadline:
            run_wrk(url, script, batches, "application/x-ndjson", 1, args.connections)
        print(f"warm: {slow_checks(url):.0f} secrets checked with scrypt by the workers", flush=True)
        cpu0, broker0, t0 = cpu_seconds(processes), cpu_seconds(broker), time.perf_counter()
        result = run_wrk(url, script, batches, "application/x-ndjson", args.seconds, args.connections)
        elapsed = time.perf_counter() - t0
        cpu, broker_cpu = cpu_seconds(processes) - cpu0, cpu_seconds(broker) - broker0
        accepted = (result["requests"] - result["non2xx"]) * BATCH
        rate = accepted / result["seconds"]
        if result["non2xx"]:
            print(f"WARNING: {result['non2xx']:,} batches were not accepted", flush=True)
        per_10k = cpu / accepted * 1e4 * 1000
        print(
            f"lake gateway ({args.workers} workers): {result['rps']:,.0f} batches/s = {rate:,.0f} msgs/s accepted, "
            f"p99 {result['p99']} (closed loop, {args.connections} connections); CPU {per_10k:,.0f} ms per 10K "
            f"messages (gateway), broker {broker_cpu / accepted * 1e4 * 1000:,.0f} ms; {cpu / elapsed:.2f} cores busy",
            flush=True,
        )
        for label, msgs_per_s in (("half the target", TARGET / 2), ("half the measured rate", rate / 2)):
            latencies, statuses = asyncio.run(paced_latencies(port, pairs, msgs_per_s / BATCH, args.seconds, 64))
            latencies.sort()
            p50, p99 = statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99) - 1] * 1000
            print(
                f"at {label} ({msgs_per_s:,.0f} msgs/s, open loop): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                f"max {latencies[-1] * 1000:.1f} ms over {len(latencies):,} requests; statuses {statuses}",
                flush=True,
            )
        cpu0 = cpu_seconds(processes)
        single = run_wrk(url, script, singles, "application/json", args.seconds / 2, 64)
        single_cpu = cpu_seconds(processes) - cpu0
        print(
            f"single messages: {single['rps']:,.0f} req/s (non-2xx {single['non2xx']}), p99 {single['p99']}; "
            f"CPU {single_cpu / max(1, single['requests'] - single['non2xx']) * 1e4 * 1000:,.0f} ms per 10K messages",
            flush=True,
        )
    finally:
        stop(gateway)
        log.close()
    print(f"gateway: {rate:,.0f} messages/s, baseline {base_rate:,.0f} messages/s, ratio {rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
