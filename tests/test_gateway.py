"""``lake gateway`` (contract section 8, HTTP): a real gateway process, real Kafka, real HTTP clients.

The gateway runs as a user runs it (``lake gateway --port P``) on a lake
whose devices were added with ``lake devices add``; what reaches Kafka is
read back from the topic.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lake.edge.gateway_limits import TokenBuckets
from lake_core import kafka_admin
from lake_core.processes import free_port

BIN = Path(sys.executable).parent
LAKE = str(BIN / "lake")
T0 = 1772352000000  # 2026-03-01T08:00:00Z
README_VEHICLE = "V000123"


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen
    log: Path
    bootstrap: str
    topic: str

    def post(self, secret, body, content_type="application/json", **headers) -> httpx.Response:
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        headers["Content-Type"] = content_type
        return httpx.post(f"{self.url}/v1/telemetry", content=body, headers=headers, timeout=30)

    def metric(self, line_start: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def lake(*args: str, root: str) -> subprocess.CompletedProcess:
    done = subprocess.run([LAKE, *args, "--lake-root", root], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def add_devices(root: str, *vehicles: str) -> dict[str, str]:
    return json.loads(lake("devices", "add", *vehicles, "--type", "scooter", "--format", "json", root=root).stdout)


def start_gateway(root: str, bootstrap: str, topic: str, log: Path, *flags: str) -> Gateway:
    port = free_port()
    cmd = [LAKE, "gateway", "--port", str(port), "--lake-root", root, "--bootstrap", bootstrap, "--topic", topic]
    with open(log, "w") as out:
        proc = subprocess.Popen([*cmd, *flags], stdout=out, stderr=subprocess.STDOUT)
    gateway = Gateway(f"http://127.0.0.1:{port}", proc, log, bootstrap, topic)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gateway exited {proc.returncode}: {log.read_text()}"
        try:
            httpx.get(f"{gateway.url}/healthz", timeout=1)
            return gateway
        except httpx.TransportError:
            time.sleep(0.05)
    stop_gateway(gateway)
    raise AssertionError(f"gateway did not answer within 30 s: {log.read_text()}")


def stop_gateway(gateway: Gateway) -> None:
    if gateway.proc.poll() is None:
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            gateway.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
            gateway.proc.wait()


def records(bootstrap: str, topic: str, key: bytes) -> list:
    """The records of ``topic`` keyed ``key`` that Kafka holds now: every partition read to its end.

    To the end-of-partition event, not to the end offset: the embedded broker reports a batch's
    first offset + 1 as the end while the batch is there whole."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.partition.eof": True}
    )
    try:
        partitions = set(range(kafka_admin.partition_count(bootstrap, topic)))
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got: list = []
        deadline = time.monotonic() + 20
        while partitions and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                if m.error() is None:
                    if m.key() == key:
                        got.append(m)
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    partitions.discard(m.partition())
        assert not partitions, f"partitions {partitions} not read to their end"
        return got
    finally:
        consumer.close()


def snapshot(vehicle: str, **extra) -> bytes:
    body = {"event_id": str(uuid.uuid4()), "vehicle_id": vehicle, "ts": "2026-03-01T08:00:00.250Z", **extra}
    return json.dumps(body).encode()


def signal_message(vehicle: str, ts_ms: int = T0) -> bytes:
    return json.dumps({"did": vehicle, "timestamp": ts_ms, "name": "soc", "int_value": 81}).encode()


VEHICLES = ["G-ONE", "G-NDJSON", "G-BAD", "G-AUTH", "G-FOREIGN", "G-OTHER", "G-SIZE", "G-RATE", "G-REVOKE"]
VEHICLES += ["G-FLOOD", "G-LEGIT", "G-SCHEMA", "G-DRAIN", "G-WORKERS", README_VEHICLE]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gateway-lake"))
    return root, add_devices(root, *VEHICLES)


@pytest.fixture(scope="module")
def topic(kafka_bootstrap):
    name = f"gw-{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [name, f"{name}-dlq"], partitions=4)
    return name


@pytest.fixture(scope="module")
def gateway(fleet, topic, kafka_bootstrap, tmp_path_factory):
    root, _ = fleet
    running = start_gateway(root, kafka_bootstrap, topic, tmp_path_factory.mktemp("gw") / "gateway.log")
    yield running
    stop_gateway(running)


@pytest.fixture
def secrets(fleet):
    return fleet[1]


# -- the building blocks ------------------------------------------------------------------------------


def test_token_buckets_refill_at_the_rate_and_refund():
    now = [0.0]
    buckets = TokenBuckets(rate=50, burst=100, clock=lambda: now[0])
    assert buckets.take("V", 100) == 0.0
    assert buckets.take("V", 1) == pytest.approx(1 / 50)
    now[0] = 0.5  # 25 tokens back
    assert buckets.take("V", 30) == pytest.approx(5 / 50)
    assert buckets.take("V", 25) == 0.0
    buckets.refund("V", 25)
    assert buckets.available("V") == pytest.approx(25)
    assert buckets.take("other", 100) == 0.0  # buckets are per key


# -- 202: what Kafka holds when the gateway says so ------------------------------------------------------


def test_one_message_is_in_kafka_when_202_returns(gateway, secrets):
    body = snapshot("G-ONE", battery={"soc_pct": 81.5})
    before = int(time.time() * 1000)
    answer = gateway.post(secrets["G-ONE"], body)
    after = int(time.time() * 1000)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 1}
    [record] = records(gateway.bootstrap, gateway.topic, b"G-ONE")  # already there: no waiting
    assert record.value() == body
    kind, ts = record.timestamp()
    assert before <= ts <= after  # the arrival time, not the event time


def test_ndjson_lines_go_as_sent_keyed_by_vehicle(gateway, secrets):
    lines = [snapshot("G-NDJSON", n=i) for i in range(5)] + [signal_message("G-NDJSON")]
    # CRLF ends, an empty line and a final newline: none is a message, numbering counts them
    body = lines[0] + b"\r\n" + b"\n".join(lines[1:3]) + b"\n\n" + b"\n".join(lines[3:]) + b"\n"
    answer = gateway.post(secrets["G-NDJSON"], body, "application/x-ndjson")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 6}
    got = records(gateway.bootstrap, gateway.topic, b"G-NDJSON")
    assert sorted(m.value() for m in got) == sorted(lines)
    assert [m.value() for m in got] == lines  # one key, one partition: in order
    assert gateway.post(secrets["G-NDJSON"], b"\n".join(lines[:2]), "application/x-ndjson; charset=utf-8").is_success


# -- refusals ----------------------------------------------------------------------------------------


def test_a_bad_line_is_named_and_nothing_is_forwarded(gateway, secrets):
    good = [snapshot("G-BAD") for _ in range(3)]
    bad_ts = snapshot("G-BAD", ts="yesterday")
    missing = json.dumps({"vehicle_id": "G-BAD", "ts": T0}).encode()
    body = b"\n".join([good[0], bad_ts, good[1], b"{not json", missing, good[2]])
    answer = gateway.post(secrets["G-BAD"], body, "application/x-ndjson")
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert [(e["line"], e["reason"]) for e in errors] == [(2, "invalid_ts"), (4, "not_json"), (5, "missing_field")]
    assert "event_id" in errors[2]["detail"]
    single = gateway.post(secrets["G-BAD"], b'{"did": "G-BAD", "timestamp": 1, "name": "soc", "int_value": 1}')
    assert single.status_code == 400 and single.json()["errors"][0]["line"] == 1
    marker = snapshot("G-BAD", marker=True)
    assert gateway.post(secrets["G-BAD"], marker).status_code == 202
    # the marker is behind the refused lines' place in the partition: had they been sent, they would be here
    assert [m.value() for m in records(gateway.bootstrap, gateway.topic, b"G-BAD")] == [marker]


def test_401_without_or_with_a_wrong_secret(gateway, secrets):
    body = snapshot("G-AUTH")
    missing = gateway.post(None, body)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="lake"'
    real = secrets["G-AUTH"]
    wrong = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for secret in (wrong, "lk1.NOBODY.abcdefghijklmnopqrstuvwxyz012345", "not-a-secret", real + "x"):
        answer = gateway.post(secret, body)
        assert answer.status_code == 401, (secret, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="lake", error="invalid_token"')
    basic = httpx.post(f"{gateway.url}/v1/telemetry", content=body, auth=("G-AUTH", real), timeout=10)
    assert basic.status_code == 401
    assert gateway.post(real, body).status_code == 202
    assert [m.value() for m in records(gateway.bootstrap, gateway.topic, b"G-AUTH")] == [body]


def test_403_for_another_vehicles_message(gateway, secrets):
    mine = snapshot("G-FOREIGN")
    for foreign in (snapshot("G-OTHER"), signal_message("G-OTHER")):
        answer = gateway.post(secrets["G-FOREIGN"], mine + b"\n" + foreign, "application/x-ndjson")
        assert answer.status_code == 403, answer.text
        assert [(e["line"], e["reason"]) for e in answer.json()["errors"]] == [(2, "vehicle_mismatch")]
    assert gateway.post(secrets["G-FOREIGN"], snapshot("G-OTHER")).status_code == 403
    assert records(gateway.bootstrap, gateway.topic, b"G-FOREIGN") == []
    assert records(gateway.bootstrap, gateway.topic, b"G-OTHER") == []


def test_413_before_the_body_is_read_whole(gateway, secrets):
    secret = secrets["G-SIZE"]
    line = snapshot("G-SIZE")
    # a declared length over 1 MiB is refused at once, without waiting for a byte of body
    with socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(
            b"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret.encode() + b"\r\n"
            b"Content-Type: application/x-ndjson\r\nContent-Length: 1048577\r\n\r\n"
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")

    def chunks():  # no Content-Length: chunked, refused once past 1 MiB
        for _ in range(4000):
            yield (line + b"\n") * 2

    streamed = httpx.post(
        f"{gateway.url}/v1/telemetry",
        content=chunks(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert streamed.status_code == 413
    assert gateway.post(secret, b"\n".join([line] * 1001), "application/x-ndjson").status_code == 413
    big = snapshot("G-SIZE", pad="x" * 17_000)
    assert gateway.post(secret, big).status_code == 413  # one JSON message: 16 KiB at most
    answer = gateway.post(secret, line + b"\n" + big, "application/x-ndjson")  # a line over 16 KiB is a bad line
    assert answer.status_code == 400 and answer.json()["errors"][0]["reason"] == "too_large"
    assert records(gateway.bootstrap, gateway.topic, b"G-SIZE") == []


def test_415_for_other_content_types(gateway, secrets):
    body = snapshot("G-ONE")
    for content_type in ("text/plain", "application/xml", "multipart/form-data; boundary=x", ""):
        assert gateway.post(secrets["G-ONE"], body, content_type).status_code == 415, content_type
    gzip = gateway.post(secrets["G-ONE"], body, **{"Content-Encoding": "gzip"})
    assert gzip.status_code == 415


def test_429_past_the_burst_with_retry_after(gateway, secrets):
    secret = secrets["G-RATE"]

    def batch(n: int) -> bytes:
        return b"\n".join(snapshot("G-RATE") for _ in range(n))

    assert gateway.post(secret, batch(1000), "application/x-ndjson").status_code == 202  # the burst: a full batch
    sent = 1000
    for _ in range(20):  # 50 messages a request, faster than 50/s come back: soon refused
        answer = gateway.post(secret, batch(50), "application/x-ndjson")
        if answer.status_code != 202:
            break
        sent += 50
    assert answer.status_code == 429, answer.text
    wait = int(answer.headers["Retry-After"])
    assert wait == 1  # 50 messages at 50/s
    time.sleep(wait)
    assert gateway.post(secret, batch(50), "application/x-ndjson").status_code == 202
    sent += 50
    assert len(records(gateway.bootstrap, gateway.topic, b"G-RATE")) == sent


def test_revoked_device_is_refused_within_10_seconds(gateway, fleet, secrets):
    root, _ = fleet
    assert gateway.post(secrets["G-REVOKE"], snapshot("G-REVOKE")).status_code == 202
    lake("devices", "revoke", "G-REVOKE", root=root)
    revoked_at = time.monotonic()
    while gateway.post(secrets["G-REVOKE"], snapshot("G-REVOKE")).status_code == 202:
        assert time.monotonic() - revoked_at < 10, "still accepted 10 s after the revocation"
        time.sleep(0.2)
    assert gateway.post(secrets["G-REVOKE"], snapshot("G-REVOKE")).status_code == 401


def test_health_metrics_and_openapi(gateway, secrets):
    health = httpx.get(f"{gateway.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    gateway.post(None, b"{}")
    gateway.post(secrets["G-ONE"], snapshot("G-ONE"))
    gateway.post(secrets["G-ONE"], b'{"schema_version": 1, "event_id": "no-ts", "vehicle_id": "G-ONE"}')
    gateway.post(secrets["G-ONE"], b"{}")
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert "# TYPE lake_gateway_requests_total counter" in text
    for status in ("202", "400", "401"):
        assert re.search(rf'lake_gateway_requests_total{{path="/v1/telemetry",status="{status}"}} [1-9]', text)
    assert re.search(r'lake_gateway_messages_total{outcome="accepted",reason=""} [1-9]', text)
    assert re.search(r'lake_gateway_messages_total{outcome="refused",reason="missing_field"} [1-9]', text)
    assert re.search(r'lake_gateway_messages_total{outcome="refused",reason="unknown_shape"} [1-9]', text)
    assert re.search(r'lake_gateway_request_duration_seconds_bucket{le="\+Inf"} [1-9]', text)
    assert re.search(r"lake_gateway_kafka_produce_seconds_count [1-9]", text)
    doc = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    post = doc["paths"]["/v1/telemetry"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert set(post["responses"]) == {"202", "400", "401", "403", "413", "415", "429", "503"}
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert set(doc["paths"]) == {"/v1/telemetry", "/healthz", "/metrics"}


def readme_curl_snippet() -> str:
    """The README's gateway example: the sh block that POSTs to /v1/telemetry, and the output it shows."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```sh\n([^`]*)```\n```\n([^`]*)```", text)
    [(script, output)] = [(a, b) for a, b in blocks if "/v1/telemetry" in a and "curl" in a]
    return script, output


def test_curl_works_as_the_readme_shows(gateway, secrets):
    script, shown = readme_curl_snippet()
    script = script.replace("http://127.0.0.1:8000", gateway.url).replace("V000001", README_VEHICLE)
    script = f"set -e\nSECRET={secrets[README_VEHICLE]}\n{script}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == shown.split() == ['{"accepted":1}', '{"accepted":2}']
    assert len(records(gateway.bootstrap, gateway.topic, README_VEHICLE.encode())) == 3


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(gateway, secrets, tmp_path):
    st = BIN / "schemathesis"
    if not st.exists():
        pytest.skip("schemathesis is not installed")
    done = subprocess.run(
        [
            str(st),
            "run",
            f"{gateway.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {secrets['G-SCHEMA']}",
            "--checks",
            "all",
            # JSON Schema cannot say "an integer written without a decimal point" (1.0 is an integer
            # there, not to the contract's validation), so schema-valid data is not always accepted
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "50",
            "--request-timeout",
            "20",
        ],
        cwd=tmp_path,  # its cache (.schemathesis/) goes there, not into the checkout
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert gateway.metric('lake_gateway_requests_total{path="/v1/telemetry",status="5') == 0


# -- under attack, under failure, at shutdown -----------------------------------------------------------


@pytest.mark.slow
def test_a_flood_of_wrong_secrets_costs_a_bounded_number_of_slow_checks(gateway, secrets):
    legit = secrets["G-LEGIT"]
    assert gateway.post(legit, snapshot("G-LEGIT")).status_code == 202  # verified before the flood
    real = secrets["G-FLOOD"]
    slow_before = gateway.metric("lake_gateway_auth_slow_checks_total")

    async def flood() -> tuple[list[int], list[float]]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def wrong(i: int) -> int:
                secret = f"{real.rsplit('.', 1)[0]}.wrong{i:06d}{'x' * 20}"
                headers = {
                    "Authorization": f"Bearer {secret}",
                    "Content-Type": "application/json",
                    "X-Forwarded-For": f"10.0.{i // 250}.{i % 250}",  # many addresses: the per-vehicle budget
                }
                answer = await client.post(f"{gateway.url}/v1/telemetry", content=b"{}", headers=headers)
                return answer.status_code

            async def legit_request() -> float:
                started = time.perf_counter()
                answer = await own.post(
                    f"{gateway.url}/v1/telemetry",
                    content=snapshot("G-LEGIT"),
                    headers={"Authorization": f"Bearer {legit}", "Content-Type": "application/json"},
                )
                assert answer.status_code == 202
                return time.perf_counter() - started

            tasks = [asyncio.create_task(wrong(i)) for i in range(300)]
            # its own connection: the flood's client queues for its pool (100), which says nothing of the gateway
            async with httpx.AsyncClient(timeout=30) as own:
                latencies = [await legit_request() for _ in range(5)]
            return list(await asyncio.gather(*tasks)), latencies

    statuses, latencies = asyncio.run(flood())
    assert set(statuses) <= {401, 429, 503}, set(statuses)
    assert statuses.count(429) > 250  # past the vehicle's budget of failures
    slow = gateway.metric("lake_gateway_auth_slow_checks_total") - slow_before
    assert slow <= 8, f"{slow} scrypt checks for one attacked vehicle"
    # a verified device is not held up by the flood (its requests wait for no slow check; the bound leaves
    # room for the flood's own client sharing the machine's 2 cores with the gateway)
    assert max(latencies) < 3.0, latencies
    # the same wrong secret again and again costs one check at most
    repeated = f"{real.rsplit('.', 1)[0]}.same-wrong-secret-xxxxxxxxxxxxxxxx"
    slow_before = gateway.metric("lake_gateway_auth_slow_checks_total")
    for _ in range(20):
        assert gateway.post(repeated, b"{}", **{"X-Forwarded-For": "10.9.9.9"}).status_code in (401, 429)
    assert gateway.metric("lake_gateway_auth_slow_checks_total") - slow_before <= 1
    # one address trying wrong secrets for many real vehicles: held to its own budget (30 failures)
    slow_before = gateway.metric("lake_gateway_auth_slow_checks_total")
    statuses, throttled = [], []
    started = time.monotonic()
    for i in range(60):
        vehicle = VEHICLES[i % len(VEHICLES)]
        secret = f"lk1.{vehicle}.wrong-{i:04d}-xxxxxxxxxxxxxxxxxxxx"
        answer = gateway.post(secret, b"{}", **{"X-Forwarded-For": "10.7.7.7"})
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            throttled.append(answer.json()["detail"])
    refilled = time.monotonic() - started  # the budget comes back at 1 failure/s
    # Not "the last is 429": a failure refilled in the loop's last second lets one more through (401).
    assert set(statuses) <= {401, 429}, statuses  # the bound that matters, scrypt checks run: below
    assert any("client address" in d for d in throttled), throttled  # (G-FLOOD's own budget is spent too)
    assert gateway.metric("lake_gateway_auth_slow_checks_total") - slow_before <= 30 + refilled + 1


@pytest.mark.slow
def test_503_when_kafka_is_down(fleet, tmp_path):
    root, secrets = fleet
    dead = f"127.0.0.1:{free_port()}"
    down = start_gateway(root, dead, "vehicle-telemetry", tmp_path / "gw.log", "--produce-timeout", "2")
    try:
        started = time.monotonic()
        answer = down.post(secrets["G-ONE"], snapshot("G-ONE"))
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 4  # bounded by the produce timeout, not hanging
        health = httpx.get(f"{down.url}/healthz", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert "kafka_unavailable" in httpx.get(f"{down.url}/metrics", timeout=10).text
    finally:
        stop_gateway(down)


@pytest.mark.slow
def test_sigterm_drains_a_request_in_flight(fleet, topic, kafka_bootstrap, tmp_path):
    root, secrets = fleet
    running = start_gateway(root, kafka_bootstrap, topic, tmp_path / "gw.log")
    body = snapshot("G-DRAIN", in_flight=True)
    port = int(running.url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            head = (
                f"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secrets['G-DRAIN']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            s.sendall(head.encode() + body[:10])
            time.sleep(0.3)
            running.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert running.proc.poll() is None  # waiting for the request in flight
            s.sendall(body[10:])
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 202 "), answer
        running.proc.wait(timeout=15)
    finally:
        stop_gateway(running)
    assert body in [m.value() for m in records(kafka_bootstrap, topic, b"G-DRAIN")]
    with pytest.raises(httpx.TransportError):  # and it no longer listens
        httpx.get(f"{running.url}/healthz", timeout=2)


@pytest.mark.slow
def test_two_workers_share_the_load_and_the_metrics(fleet, topic, kafka_bootstrap, tmp_path):
    root, secrets = fleet
    running = start_gateway(root, kafka_bootstrap, topic, tmp_path / "gw.log", "--workers", "2", "--rate", "10000")
    try:
        counts = set()
        for _ in range(40):  # a new connection each time: both workers answer
            with httpx.Client(timeout=10) as client:
                answer = client.post(
                    f"{running.url}/v1/telemetry",
                    content=snapshot("G-WORKERS"),
                    headers={"Authorization": f"Bearer {secrets['G-WORKERS']}", "Content-Type": "application/json"},
                )
                assert answer.status_code == 202, answer.text
        time.sleep(1.5)  # each worker shares its figures every second
        for _ in range(6):
            text = httpx.get(f"{running.url}/metrics", timeout=10).text
            count = re.search(r'lake_gateway_requests_total{path="/v1/telemetry",status="202"} (\d+)', text)
            counts.add(count and int(count.group(1)))
        assert counts == {40}, counts  # whichever worker answers, it reports both
    finally:
        stop_gateway(running)
    assert len(records(kafka_bootstrap, topic, b"G-WORKERS")) == 40


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end():
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gateway", "--seconds", "1", "--devices", "3"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"gateway: [\d,]+ messages/s, baseline [\d,]+ messages/s, ratio \d+\.\d\d", last), last
    assert "statuses {202: " in done.stdout


def test_the_compose_stack_runs_a_real_gateway_command():
    import yaml

    from lake.cli import build_parser

    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "compose.yaml").read_text())
    service = compose["services"]["gateway"]
    args = build_parser().parse_args(service["command"][1:])
    assert service["command"][0] == "lake" and args.command == "gateway"
    assert args.host == "0.0.0.0" and f":{args.port}:" in service["ports"][0]
    assert f"localhost:{args.port}/healthz" in " ".join(service["healthcheck"]["test"])


def test_a_missing_topic_is_named_at_start(fleet, kafka_bootstrap):
    root, _ = fleet
    done = subprocess.run(
        [LAKE, "gateway", "--port", str(free_port()), "--lake-root", root, "--bootstrap", kafka_bootstrap]
        + ["--topic", "no-such-topic"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        f"lake: error: topic 'no-such-topic' does not exist on {kafka_bootstrap} (run `lake broker start`?)"
    ]
