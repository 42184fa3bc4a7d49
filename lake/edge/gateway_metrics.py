"""The gateway's Prometheus metrics, in the text exposition format (version 0.0.4), written by hand.

(``prometheus_client`` is not a dependency of the lake; what the gateway
exports is four families and fits in this module.)

- ``lake_gateway_requests_total{path,status}``: HTTP requests answered;
- ``lake_gateway_messages_total{outcome,reason}``: messages accepted
  (``outcome="accepted"``, ``reason=""``) and refused, by reason: the
  contract's reason code for a bad line, else why its request was refused
  (``batch_refused`` for the good lines of a 400, ``vehicle_mismatch``,
  ``rate_limited``, ``kafka_unavailable``);
- ``lake_gateway_request_duration_seconds``: histogram of POST latencies;
- ``lake_gateway_kafka_produce_seconds``: histogram, per request, from the
  first produce to the last acknowledgement;
- ``lake_gateway_auth_slow_checks_total``: secrets checked with scrypt.

With several workers each counts its own; each writes a snapshot to a
shared folder every second and ``/metrics`` (whichever worker answers) adds
them up, so a scrape sees the whole gateway (other workers' figures at most
a second old).
"""

from __future__ import annotations

import bisect
import json
import os
import threading
from typing import Callable, Optional

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PATHS = frozenset({"/v1/telemetry", "/healthz", "/metrics", "/openapi.json"})


class _Histogram:
    __slots__ = ("counts", "total", "observed")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last one past the largest bound
        self.total = 0.0
        self.observed = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.observed += 1

    def state(self) -> dict:
        return {"counts": self.counts, "sum": self.total, "count": self.observed}


class Metrics:
    def __init__(self, shared_dir: Optional[str] = None, slow_checks: Callable[[], int] = lambda: 0):
        self.requests: dict[str, int] = {}  # "path status" -> count
        self.messages: dict[str, int] = {}  # "outcome reason" -> count
        self.request_seconds = _Histogram()
        self.produce_seconds = _Histogram()
        self._slow_checks = slow_checks
        self._shared_dir = shared_dir
        self._own_file = None if shared_dir is None else os.path.join(shared_dir, f"worker-{os.getpid()}.json")
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="gateway-metrics", daemon=True)

    # -- counting (on the event loop)

    def request(self, path: str, status: int, seconds: Optional[float] = None) -> None:
        key = f"{path if path in _PATHS else 'other'} {status}"
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None:
            self.request_seconds.observe(seconds)

    def messages_done(self, outcome: str, reason: str, count: int) -> None:
        if count:
            key = f"{outcome} {reason}"
            self.messages[key] = self.messages.get(key, 0) + count

    def produced(self, seconds: float) -> None:
        self.produce_seconds.observe(seconds)

    # -- sharing between workers

    def start(self) -> None:
        if self._shared_dir is not None:
            self._writer.start()

    def close(self) -> None:
        self._stop.set()
        if self._own_file is not None:
            self._write()

    def _state(self) -> dict:
        return {
            "requests": dict(self.requests),
            "messages": dict(self.messages),
            "request_seconds": self.request_seconds.state(),
            "produce_seconds": self.produce_seconds.state(),
            "slow_checks": self._slow_checks(),
        }

    def _write_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._write()

    def _write(self) -> None:
        assert self._own_file is not None
        temporary = f"{self._own_file}.tmp"
        try:
            with open(temporary, "w") as f:
                json.dump(self._state(), f)
            os.replace(temporary, self._own_file)
        except OSError:  # the folder went away (the gateway is stopping): nothing to share any more
            pass

    def _states(self) -> list[dict]:
        states = [self._state()]
        if self._shared_dir is None:
            return states
        try:
            names = os.listdir(self._shared_dir)
        except OSError:
            return states
        for name in names:
            path = os.path.join(self._shared_dir, name)
            if not name.endswith(".json") or path == self._own_file:
                continue
            try:  # a worker that stopped keeps its file: counters never go down
                with open(path) as f:
                    states.append(json.load(f))
            except (OSError, ValueError):
                continue
        return states

    # -- the exposition

    def exposition(self) -> str:
        states = self._states()
        lines: list[str] = []
        family(lines, "lake_gateway_requests_total", "counter", "HTTP requests answered, by path and status.")
        for key, count in sorted(_sum_counts(s["requests"] for s in states).items()):
            path, status = key.rsplit(" ", 1)
            lines.append(f'lake_gateway_requests_total{{path="{path}",status="{status}"}} {count}')
        family(lines, "lake_gateway_messages_total", "counter", "Messages accepted or refused, by reason.")
        for key, count in sorted(_sum_counts(s["messages"] for s in states).items()):
            outcome, reason = key.split(" ", 1)
            lines.append(f'lake_gateway_messages_total{{outcome="{outcome}",reason="{reason}"}} {count}')
        for name, field, text in (
            ("lake_gateway_request_duration_seconds", "request_seconds", "Latency of POST /v1/telemetry."),
            ("lake_gateway_kafka_produce_seconds", "produce_seconds", "Per request, first produce to last ack."),
        ):
            family(lines, name, "histogram", text)
            _histogram(lines, name, [s[field] for s in states])
        family(lines, "lake_gateway_auth_slow_checks_total", "counter", "Secrets checked with scrypt.")
        lines.append(f"lake_gateway_auth_slow_checks_total {sum(s['slow_checks'] for s in states)}")
        return "\n".join(lines) + "\n"


def family(lines: list[str], name: str, kind: str, text: str) -> None:
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


def _sum_counts(maps) -> dict[str, int]:
    total: dict[str, int] = {}
    for counts in maps:
        for key, count in counts.items():
            total[key] = total.get(key, 0) + count
    return total


def _histogram(lines: list[str], name: str, states: list[dict]) -> None:
    counts = [sum(s["counts"][i] for s in states) for i in range(len(LATENCY_BUCKETS) + 1)]
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, counts):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
    cumulative += counts[-1]
    lines.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
    lines.append(f"{name}_sum {sum(s['sum'] for s in states)}")
    lines.append(f"{name}_count {sum(s['count'] for s in states)}")
