"""The local Airflow's ``run/`` folder: one pid file and one log per component.

A pid file holds the pid and the process's start time: together they name
one process for good, so a stale file whose pid the kernel gave to another
program never gets that program signalled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from lake_core.processes import proc_stat, reap

__all__ = [
    "COMPONENTS",
    "run_dir",
    "pid_file",
    "log_file",
    "stack_file",
    "passwords_file",
    "read_pid",
    "is_our_leader",
    "running_components",
]

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def run_dir(home: str) -> Path:
    return Path(home) / "run"


def pid_file(home: str, component: str) -> Path:
    return run_dir(home) / f"{component}.pid"


def log_file(home: str, component: str) -> Path:
    return run_dir(home) / f"{component}.log"


def stack_file(home: str) -> Path:
    return run_dir(home) / "stack.json"


def passwords_file(home: str) -> Path:
    return run_dir(home) / "passwords.json"


def is_our_leader(pid: int, start: Optional[int]) -> bool:
    """True when ``pid`` is the live process we started, still leading its own group.

    Identity is the pid plus its start time, as recorded in the pid file: a
    stale pid file whose pid the kernel has given to an unrelated program
    must not get that program killed. (The command line is no proof: right
    after ``exec`` it can read empty, and Airflow rewrites its own.)
    """
    proc = proc_stat(pid)
    if proc is None or proc.pgid != pid:
        return False
    if start is None:  # a pid file without a start time (written by hand): trust only an Airflow command line
        try:
            return b"airflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    return proc.start == start


def read_pid(home: str, component: str) -> tuple:
    """(pid, start time) from the pid file; (None, None) when absent or unreadable."""
    try:
        words = pid_file(home, component).read_text().split()
        return int(words[0]), (int(words[1]) if len(words) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def running_components(home: str) -> Dict[str, int]:
    """Components whose pid file names a live process group of ours; stale pid files are removed."""
    alive = {}
    for component in COMPONENTS:
        pid, start = read_pid(home, component)
        if pid is None:
            pid_file(home, component).unlink(missing_ok=True)
            continue
        reap([pid])
        if is_our_leader(pid, start):
            alive[component] = pid
        else:
            pid_file(home, component).unlink(missing_ok=True)
    return alive
