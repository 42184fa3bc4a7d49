"""Helpers of the tests that run a real Prometheus: a process for the length of a block, waiting for an
HTTP endpoint, and PromQL queries answered as plain numbers."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx

PROMETHEUS, PROMTOOL, PUSHGATEWAY = (shutil.which(n) for n in ("prometheus", "promtool", "prometheus-pushgateway"))


@contextlib.contextmanager
def process(args: list, log: Path, env: dict | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[:3]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


class Prom:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> dict:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", body
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in body["data"]["result"]}

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return next(iter(result.values())) if len(result) == 1 else None

    def wait(self, what: str, check, timeout: float = 120):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(1)
        raise AssertionError(f"Prometheus never saw {what} (last: {last})")
