"""A real Prometheus scrapes the edge and the hot path while a region "loses coverage": the simulator
sends through its spool into the project's Mosquitto, the bridge forwards to Kafka and the stream
keeps the hot store. Mosquitto is stopped for a few seconds mid-run and started again: Prometheus must
have seen the simulator's spool fill (``lake_edge_spool_messages``: unconfirmed messages) and drain,
and the bridge's and the stream's counters must account for every message the simulator sent."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import subprocess
import time

import pytest

from lake_core.processes import free_port
from support.hot_fleet import fresh_hot_store
from support.mqtt_edge import edge_lake, have_mosquitto, lake, lake_argv, start_bridge, wait_for
from support.prometheus import PROMETHEUS, Prom, process, wait_http

pytestmark = [pytest.mark.skipif(have_mosquitto() is not None, reason=str(have_mosquitto())), pytest.mark.slow]

VEHICLES, SECONDS = 4, 24


def test_prometheus_sees_the_spool_fill_and_drain_and_every_message_through_bridge_and_stream(
    kafka_bootstrap, tmp_path
):
    if PROMETHEUS is None:
        pytest.skip("needs Debian's prometheus (scripts/system-deps installs it)")
    with contextlib.ExitStack() as stack:
        settings = stack.enter_context(edge_lake(kafka_bootstrap))
        dsn = stack.enter_context(fresh_hot_store())
        ports = {n: free_port() for n in ("mqtt", "bridge", "stream", "edge", "prometheus")}
        lake(settings, "mqtt", "start", "--port", str(ports["mqtt"]))
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{ports[job]}"]}]}
                        for job in ("bridge", "stream", "edge")
                    ],
                }
            )
        )
        prometheus = stack.enter_context(
            process(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                tmp_path / "prometheus.log",
            )
        )  # fmt: skip
        bridge = start_bridge(settings, tmp_path / "bridge.log", "--metrics-port", str(ports["bridge"]))
        stack.callback(lambda: (bridge.terminate(), bridge.wait(30)))
        stream = stack.enter_context(
            process(
                lake_argv(settings, "stream", "--hot-dsn", dsn, "--alerts-topic", f"{settings.topic}-alerts",
                          "--follow", "--metrics-port", str(ports["stream"]), "--pass-seconds", "5"),
                tmp_path / "stream.log",
            )
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready", prometheus, tmp_path / "prometheus.log")
        wait_http(f"http://127.0.0.1:{ports['stream']}/metrics", stream, tmp_path / "stream.log", timeout=120)

        start = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        simulate = subprocess.Popen(
            lake_argv(settings, "simulate", "--sink", "mqtt", "--vehicles", str(VEHICLES), "--duration", f"{SECONDS}s",
                      "--start", start, "--realtime", "--bad-rate", "0", "--duplicate-rate", "0",
                      "--clock-skew-rate", "0", "--gps-glitch-rate", "0", "--no-progress",
                      "--spool", str(tmp_path / "edge.spool"), "--metrics-port", str(ports["edge"])),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        stack.callback(lambda: simulate.poll() is None and simulate.kill())
        prom = Prom(f"http://127.0.0.1:{ports['prometheus']}")
        prom.wait("the simulator's spool metrics", lambda: prom.value('lake_edge_uplink_up{job="edge"}') == 1, 60)

        time.sleep(5)
        lake(settings, "mqtt", "stop")  # coverage lost: the simulator keeps sending into its spool
        prom.wait("the spool filling", lambda: (prom.value('lake_edge_spool_messages{job="edge"}') or 0) >= 3, 30)
        peak = prom.value('lake_edge_spool_messages{job="edge"}')
        lake(settings, "mqtt", "start", "--port", str(ports["mqtt"]))
        # coverage back: the replay is confirmed and the depth falls back to what one window holds
        prom.wait("the spool draining", lambda: prom.value('lake_edge_spool_messages{job="edge"}') <= VEHICLES, SECONDS)
        assert simulate.poll() is None  # seen while the run still went on

        out, _ = simulate.communicate(timeout=SECONDS + 90)
        assert simulate.returncode == 0, out
        sent = VEHICLES * SECONDS
        assert re.search(rf"\b{sent:,} messages\b", out), out  # the run's own summary names what it sent

        # (uplink_up need not drop: paho queues a QoS 1 message while disconnected, and the spool declares the
        # uplink down only when a confirmation times out; the depth is what shows the outage)
        assert prom.value('last_over_time(lake_edge_uplink_up{job="edge"}[10m])') == 1
        assert prom.value('max_over_time(lake_edge_spool_messages{job="edge"}[10m])') >= peak
        # (the run's exit status says its spool ended empty: closing with messages unconfirmed fails)
        # scraped once a second: the last scrape may precede the run's last tick or two
        spooled = prom.value('max_over_time(lake_edge_messages_spooled_total{job="edge"}[10m])')
        assert sent - 2 * VEHICLES <= spooled <= sent

        # at least once through the bridge (a redelivery after the restart counts twice), every one in the stream
        prom.wait(
            "every message forwarded",
            lambda: (prom.value('lake_bridge_messages_forwarded_total{job="bridge"}') or 0) >= sent,
            60,
        )
        assert prom.value('lake_bridge_connected{job="bridge"}') == 1
        assert prom.value('lake_bridge_mqtt_connects_total{job="bridge"}') >= 2  # it reconnected
        forwarded = prom.value('lake_bridge_messages_forwarded_total{job="bridge"}')
        prom.wait(
            "the stream consuming every forwarded message",
            lambda: prom.value('lake_stream_records_total{job="stream"}') == forwarded,
            120,
        )
        assert wait_for(lambda: prom.value('lake_stream_state_vehicles{job="stream"}') == VEHICLES, 30)
