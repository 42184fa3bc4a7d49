"""A real Prometheus (Debian's) scrapes the lake's parts while they work, with the shipped alert rules:
``lake ingest --metrics-port`` fed known bad messages, ``lake gateway`` refusing a known bad line,
``lake serve`` (freshness), and a Pushgateway the Silver job pushed to. The series Prometheus stored
must hold the figures the test produced; ``promtool check rules`` passes; a rule fires on real data."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lake.query import query
from lake_core.processes import free_port
from support import lake_scenario
from support.ingest_helpers import T0, produce, snapshot
from support.prometheus import PROMETHEUS, PROMTOOL, PUSHGATEWAY, Prom, process, wait_http
from support.read_api_fleet import hot_database

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "docker" / "prometheus" / "lake_rules.yml"
BIN = Path(sys.executable).parent
HOUR = 3_600_000

BAD = {  # what the ingest must count, by reason
    "not_json": [b"not json", b"{oops"],
    "not_utf8": [b"\xff\xfe"],
    "not_object": [b"[1]", b"42"],
    "invalid_vehicle_id": [
        json.dumps({"schema_version": 1, "event_id": f"e{i}", "vehicle_id": "bad id!", "ts": T0}).encode()
        for i in range(4)
    ],
    "unknown_signal": [json.dumps({"did": "V1", "timestamp": T0, "name": "warp", "int_value": 1}).encode()],
}


def _needs(*tools):
    missing = [n for n, t in zip(("prometheus", "promtool", "prometheus-pushgateway"), tools) if t is None]
    if missing:
        pytest.skip(f"needs Debian's {' and '.join(missing)} (scripts/system-deps installs them)")


def test_promtool_checks_the_alert_rules():
    _needs(PROMTOOL)
    done = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout


def _lake(*args: str, root: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lake"), *args, "--lake-root", root],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_prometheus_scrapes_every_part_with_the_figures_the_test_produced(settings, tmp_path):
    _needs(PROMETHEUS, PROMTOOL, PUSHGATEWAY)
    root = settings.lake_root
    # Bronze hour 08 of 2026-03-01 gets 40 good messages and every bad one; one record per partition in
    # hour 10 closes 08; hour 10 stays open (long past: the "not closed" rule must fire)
    good = [(b"V%d" % (i % 8), snapshot(f"V{i % 8}", T0 + i * 1000), T0 + i * 1000) for i in range(40)]
    bad = [(None, v, T0 + 5000) for values in BAD.values() for v in values]
    closers = [(b"C%d" % p, snapshot(f"C{p}", T0 + 2 * HOUR + 300_000), T0 + 2 * HOUR + 300_000, p) for p in range(4)]
    produce(settings, good + bad + closers)
    produced = len(good) + len(bad) + len(closers)

    # a second lake, the hand-made scenario, for the Silver job that pushes to the Pushgateway
    batch_root = str(tmp_path / "batch_lake")
    lake_scenario.build(batch_root)

    ports = {name: free_port() for name in ("ingest", "serve", "gateway", "pushgateway", "prometheus")}
    secret = json.loads(_lake("devices", "add", "GW1", "--type", "scooter", "--format", "json", root=root).stdout)[
        "GW1"
    ]
    common = ["--bootstrap", settings.bootstrap, "--topic", settings.topic, "--lake-root", root]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "ingest", "static_configs": [{"targets": [f"127.0.0.1:{ports['ingest']}"]}]},
                    {"job_name": "serve", "static_configs": [{"targets": [f"127.0.0.1:{ports['serve']}"]}]},
                    {"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{ports['gateway']}"]}]},
                    {
                        "job_name": "pushgateway",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{ports['pushgateway']}"]}],
                    },
                ],
            }
        )
    )
    logs = tmp_path
    with contextlib.ExitStack() as stack:
        dsn = stack.enter_context(hot_database())
        pushgateway = stack.enter_context(
            process([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{ports['pushgateway']}"], logs / "pushgateway.log")
        )
        prometheus = stack.enter_context(
            process(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                ],
                logs / "prometheus.log",
            )
        )
        ingest = stack.enter_context(
            process(
                [
                    str(BIN / "lake"),
                    "ingest",
                    *common,
                    "--follow",
                    "--buffer-seconds",
                    "2",
                    "--metrics-port",
                    str(ports["ingest"]),
                    "--validate-processes",
                    "0",
                ],
                logs / "ingest.log",
            )
        )
        serve = stack.enter_context(
            process(
                [str(BIN / "lake"), "serve", *common, "--port", str(ports["serve"])],
                logs / "serve.log",
                {"LAKE_HOT_DSN": dsn},
            )
        )
        gateway = stack.enter_context(
            process([str(BIN / "lake"), "gateway", *common, "--port", str(ports["gateway"])], logs / "gateway.log")
        )
        wait_http(f"http://127.0.0.1:{ports['pushgateway']}/metrics", pushgateway, logs / "pushgateway.log")
        wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready", prometheus, logs / "prometheus.log")
        wait_http(f"http://127.0.0.1:{ports['serve']}/healthz", serve, logs / "serve.log")
        wait_http(f"http://127.0.0.1:{ports['gateway']}/healthz", gateway, logs / "gateway.log")
        wait_http(f"http://127.0.0.1:{ports['ingest']}/metrics", ingest, logs / "ingest.log", timeout=120)

        # the gateway refuses one bad line (unknown signal) of a batch of three
        lines = [
            json.dumps({"did": "GW1", "timestamp": T0, "name": "soc", "int_value": 50}),
            json.dumps({"did": "GW1", "timestamp": T0, "name": "warp", "int_value": 1}),
            json.dumps({"did": "GW1", "timestamp": T0, "name": "speed", "int_value": 5}),
        ]
        refused = httpx.post(
            f"http://127.0.0.1:{ports['gateway']}/v1/telemetry",
            content="\n".join(lines).encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/x-ndjson"},
        )
        assert refused.status_code == 400

        # the Silver job of the scenario's hour 08 pushes its outcome: first refused by its gate (the
        # scenario quarantines 24 % of the hour), then published with a looser limit
        push = {"LAKE_PUSHGATEWAY_URL": f"http://127.0.0.1:{ports['pushgateway']}"}
        refused_run = _lake("silver", "--hour", "2026-03-01T08", root=batch_root, env=push)
        assert refused_run.returncode == 5 and "quality gate" in refused_run.stderr
        prom = Prom(f"http://127.0.0.1:{ports['prometheus']}")
        prom.wait("the gate failure", lambda: prom.value('lake_batch_last_gate_failed{job_name="silver"}') == 1)
        assert prom.value('lake_batch_last_run_ok{job_name="silver"}') == 0

        def firing():
            alerts = httpx.get(f"{prom.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

        prom.wait("LakeGateFailed firing", lambda: "LakeGateFailed" in firing())  # another rule may fire first
        silver = _lake("silver", "--hour", "2026-03-01T08", "--max-quarantine-rate", "0.5", root=batch_root, env=push)
        assert silver.returncode == 0, silver.stderr[-3000:]
        quarantine = query(
            "SELECT reason, count(*) AS n FROM silver_quarantine GROUP BY reason", batch_root
        ).to_pylist()
        expected_quarantine = {r["reason"]: r["n"] for r in quarantine}
        assert expected_quarantine  # the scenario quarantines rows of three reasons

        prom = Prom(f"http://127.0.0.1:{ports['prometheus']}")
        prom.wait(
            "every target up",
            lambda: prom.query("up") and all(v == 1 for v in prom.query("up").values()) and len(prom.query("up")) == 4,
        )
        prom.wait(
            "every record ingested",
            lambda: prom.value('lake_ingest_records_total{job="ingest"}') == produced,
        )
        rejects = {dict(k)["reason"]: v for k, v in prom.query("lake_ingest_rejects_total").items()}
        assert rejects == {reason: len(values) for reason, values in BAD.items()}
        assert prom.value("lake_ingest_dlq_produced_total") == len(bad)
        assert prom.value("lake_ingest_bronze_rows_total") == len(good) + len(closers)
        assert prom.value("sum(lake_ingest_consumer_lag_records)") == 0
        # hour 08 closes (09 holds nothing, so there is nothing to close); hour 10 stays open
        prom.wait("hour 08 closed", lambda: prom.value("lake_ingest_hours_closed_total") == 1)
        assert prom.value("lake_ingest_open_hours") == 1
        assert prom.value("lake_ingest_oldest_open_hour_timestamp_seconds") == (T0 + 2 * HOUR) / 1000

        gateway_refused = prom.query('lake_gateway_messages_total{outcome!="accepted"}')
        by_reason = {dict(k)["reason"]: v for k, v in gateway_refused.items()}
        assert by_reason == {"unknown_signal": 1, "batch_refused": 2}

        # the published run's push reaches Prometheus at its next scrape of the Pushgateway
        prom.wait("the published run", lambda: prom.value('lake_batch_last_run_ok{job_name="silver"}') == 1)
        assert prom.value('lake_batch_last_gate_failed{job_name="silver"}') == 0
        pushed = {dict(k)["reason"]: v for k, v in prom.query('lake_batch_quarantined_rows{job_name="silver"}').items()}
        assert pushed == expected_quarantine

        # lake serve: the lake's freshness (Bronze's newest complete hour ends at 10:00) and its own requests
        prom.wait(
            "Bronze freshness",
            lambda: prom.value('lake_layer_published_until_timestamp_seconds{layer="bronze"}') == (T0 + HOUR) / 1000,
        )
        newest = prom.value("lake_kafka_newest_record_timestamp_seconds")
        assert newest == (T0 + 2 * HOUR + 300_000) / 1000
        assert prom.value('lake_layer_behind_seconds{layer="bronze"}') == 3900
        assert prom.value('sum(lake_api_requests_total{route="/metrics"})') >= 1

        # the rules run on these series: hour 10 of last March is open, long past its 15 minutes; the
        # gate passed at the second run
        prom.wait("LakeBronzeHourNotClosed firing", lambda: "LakeBronzeHourNotClosed" in firing())
        prom.wait("LakeGateFailed resolved", lambda: "LakeGateFailed" not in firing())
        assert prom.value('lake_batch_last_success_timestamp_seconds{job_name="silver"}') > time.time() - 600
        assert ingest.poll() is None and serve.poll() is None


def test_a_gate_run_on_its_own_and_maintenance_push_their_outcome(tmp_path):
    _needs(PROMETHEUS, PROMTOOL, PUSHGATEWAY)
    root = str(tmp_path / "lake")
    lake_scenario.build(root)
    port = free_port()
    push = {"LAKE_PUSHGATEWAY_URL": f"http://127.0.0.1:{port}"}
    with process([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "pushgateway.log") as gw:
        wait_http(f"http://127.0.0.1:{port}/metrics", gw, tmp_path / "pushgateway.log")
        assert _lake("validate", "bronze", "--hour", "2026-03-01T08", root=root, env=push).returncode == 0
        assert _lake("validate", "gold", "--date", "2026-03-01", root=root, env=push).returncode != 0  # no Gold
        assert _lake("maintain", "--now", "2026-03-02T00:00:00Z", root=root, env=push).returncode == 0
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'lake_batch_last_run_ok{instance="",job="lake_batch",job_name="validate_bronze"} 1' in text
    assert 'lake_batch_last_run_ok{instance="",job="lake_batch",job_name="validate_gold"} 0' in text
    assert 'lake_batch_last_run_ok{instance="",job="lake_batch",job_name="maintain"} 1' in text
