"""Helpers of the MQTT edge tests: a lake Mosquitto can reach, the real `lake` commands, Debian's clients.

Started as root (as the tests run), Mosquitto drops to the ``mosquitto`` user,
which cannot enter pytest's ``/tmp/pytest-of-root`` (mode 0700): each test
lake lives in its own ``/tmp/lake-edge-*`` folder, mode 0711.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

from lake_core import kafka_admin
from lake_core.settings import Settings

LAKE = str(Path(sys.executable).with_name("lake"))
PARTITIONS = 4
#: Bridges started in each test lake: killed when the lake goes, whatever the test did.
_BRIDGES: dict[str, list] = {}


def have_mosquitto() -> Optional[str]:
    """Why the MQTT tests cannot run here, or None."""
    for tool in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto_pub", "/usr/bin/mosquitto_sub"):
        if not os.path.exists(tool):
            return f"{tool} missing: scripts/system-deps installs mosquitto and mosquitto-clients"
    return None


@contextlib.contextmanager
def edge_lake(bootstrap: str) -> Iterator[Settings]:
    root = tempfile.mkdtemp(prefix="lake-edge-")
    os.chmod(root, 0o711)
    topic = f"edge-{uuid.uuid4().hex[:10]}"
    settings = Settings(lake_root=root, bootstrap=bootstrap, topic=topic, dlq_topic=f"{topic}-dlq")
    kafka_admin.ensure_topics(bootstrap, [settings.topic, settings.dlq_topic], partitions=PARTITIONS)
    try:
        yield settings
    finally:
        for proc in _BRIDGES.pop(root, []):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lake(settings, "mqtt", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def lake_argv(settings: Settings, *args: str) -> list:
    return [
        LAKE,
        *args,
        "--lake-root",
        settings.lake_root,
        "--bootstrap",
        settings.bootstrap,
        "--topic",
        settings.topic,
    ]


def lake(settings: Settings, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(lake_argv(settings, *args), capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"lake {' '.join(args)}: {done.returncode} {done.stderr}"
    return done


def add_devices(settings: Settings, *vehicles: str) -> dict:
    done = lake(settings, "devices", "add", *vehicles, "--format", "json")
    return json.loads(done.stdout)


def bridge_secret(settings: Settings) -> str:
    return (Path(settings.lake_root) / "_local" / "mqtt" / "bridge.secret").read_text().strip()


def start_bridge(settings: Settings, log: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    """``lake bridge mqtt``; returns once it is subscribed (unless ``wait`` is False)."""
    before = log.read_text().count("subscribed to") if log.exists() else 0
    out = open(log, "ab")
    proc = subprocess.Popen(
        lake_argv(settings, "bridge", "mqtt", "--log-every", "1", *extra),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _BRIDGES.setdefault(settings.lake_root, []).append(proc)
    if wait:
        subscribed = wait_for(lambda: log.read_text().count("subscribed to") > before or proc.poll() is not None, 30)
        assert subscribed and proc.poll() is None, f"the bridge did not subscribe: {log.read_text()[-2000:]}"
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def mosquitto_pub(
    port: int, user: Optional[str], password: Optional[str], topic: str, lines: list, *extra: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Debian's ``mosquitto_pub -l``: one message per line of stdin, QoS 1."""
    argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-l", *extra]
    if user is not None:
        argv += ["-u", user]
    if password is not None:
        argv += ["-P", password]
    data = "".join(line + "\n" for line in lines)
    return subprocess.run(argv, input=data, capture_output=True, text=True, timeout=timeout)


def wait_for(condition: Callable[[], object], timeout: float, every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def snapshot(vehicle: str, event_id: Optional[str] = None, ts_ms: Optional[int] = None) -> str:
    return json.dumps(
        {
            "schema_version": 1,
            "event_id": event_id or str(uuid.uuid4()),
            "vehicle_id": vehicle,
            "ts": ts_ms if ts_ms is not None else int(time.time() * 1000),
            "battery": {"soc_pct": 50.0},
        },
        separators=(",", ":"),
    )
