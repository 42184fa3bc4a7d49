"""Long-running services announce themselves, so ``lake status`` can say what runs.

The embedded broker and Mosquitto keep their own records (they are started
in the background by ``lake broker|mqtt start``); the foreground services
(the gateway, the bridge, the read API, the stream) write one small JSON
file each while they run: ``{state dir}/services/{name}-{pid}.json`` with
their pid, the process's start time (a pid alone can be reused), where they
listen and where their metrics are. The file is removed when the service
stops; one left by a killed service names a process that is gone (or a
different one) and is dropped by the next reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from lake_core.processes import broker_state_dir, proc_stat

__all__ = ["ServiceRecord", "announced", "running_services", "services_dir"]


@dataclass(frozen=True)
class ServiceRecord:
    name: str  # gateway | bridge | serve | stream
    pid: int
    start: Optional[int]  # ProcStat.start of pid when it announced itself
    host: str
    started_at: float  # epoch seconds
    detail: str = ""  # where it listens, what it reads
    metrics: Optional[str] = None  # the URL of its /metrics, if it serves one
    extra: dict = field(default_factory=dict)

    def is_running(self) -> bool:
        if self.host != socket.gethostname():
            return True  # another machine's process: its file is all we know
        stat = proc_stat(self.pid)
        return stat is not None and (self.start is None or stat.start == self.start)


def services_dir(lake_root: str) -> Path:
    """Beside the broker's record: ``{lake}/_local/services``, or the user's state dir for a remote lake."""
    return broker_state_dir(lake_root).parent / "services"


@contextlib.contextmanager
def announced(lake_root: str, name: str, detail: str = "", metrics: Optional[str] = None) -> Iterator[ServiceRecord]:
    """Write this process's record for the duration of the block (best effort: never stops a service)."""
    pid = os.getpid()
    stat = proc_stat(pid)
    record = ServiceRecord(
        name=name,
        pid=pid,
        start=stat.start if stat else None,
        host=socket.gethostname(),
        started_at=time.time(),
        detail=detail,
        metrics=metrics,
    )
    path = services_dir(lake_root) / f"{name}-{pid}.json"
    written = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(record)))
        os.replace(partial, path)
        written = True
    except OSError:
        pass  # a read-only state dir costs only the status line
    try:
        yield record
    finally:
        if written:
            with contextlib.suppress(OSError):
                path.unlink()


def running_services(lake_root: str) -> list[ServiceRecord]:
    """Every announced service still running, oldest first; records of dead processes are removed."""
    out: list[ServiceRecord] = []
    base = services_dir(lake_root)
    try:
        files = sorted(base.glob("*.json"))
    except OSError:
        return out
    for path in files:
        try:
            record = ServiceRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if record.is_running():
            out.append(record)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(out, key=lambda r: r.started_at)
