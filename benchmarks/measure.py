"""Timing a command the way a user runs it: its own process, wall clock, CPU time and peak memory.

``run_child`` starts the command through a small launcher process, which
waits for it with ``os.wait4`` and reports that one process's time, CPU time
and ``ru_maxrss``. The launcher is there because Linux hands a child the
high-water mark of the process that forked it: started straight from a
benchmark holding gigabytes of test data, every child would report at least
that much. Output goes to files, so a chatty child cannot block on a pipe.

A job is often more than one process (the quality gate's helper, Spark's
JVM): the launcher also samples, every 100 ms, the summed RSS of the command
and all its descendants (``/proc``), and reports the highest sum seen
(``tree_peak_rss_mb``; at least the command's own ``ru_maxrss``). Pages two
processes share are counted twice, so the figure errs on the high side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["ChildRun", "run_child", "child_env", "python_module", "lake_command", "rate", "PeakMemory"]


@dataclass
class ChildRun:
    command: list
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system: less sensitive than wall time to a busy machine
    tree_peak_rss_mb: float = 0.0  # highest summed RSS of the command and its descendants (sampled)
    processes: int = 1  # processes seen in the command's tree

    def last_line(self, stream: str = "stdout") -> str:
        lines = [ln for ln in getattr(self, stream).splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def check(self, what: str) -> "ChildRun":
        """Exit the benchmark (non-zero, one line) when the child failed."""
        if self.returncode != 0:
            sys.exit(f"{what} failed (exit {self.returncode}): {self.last_line('stderr') or self.last_line()}")
        return self


#: The launcher: runs argv[3:], then writes its measures to argv[1] as JSON and exits with its code.
_LAUNCHER = """
import json, os, subprocess, sys, threading, time
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

def tree(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/" + name + "/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found

def rss_kb(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE_KB
    except (OSError, ValueError, IndexError):
        return 0

peak, seen, done = [0], set(), threading.Event()

def sample(root):
    while not done.wait(0.1):
        pids = tree(root)
        seen.update(pids)
        peak[0] = max(peak[0], sum(rss_kb(p) for p in pids))

started = time.perf_counter()
proc = subprocess.Popen(sys.argv[3:])
sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
sampler.start()
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - started
done.set()
sampler.join()
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "maxrss_kb": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime,
               "returncode": code, "tree_kb": max(peak[0], usage.ru_maxrss), "processes": max(1, len(seen))}, f)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(command: Sequence[str], env: Optional[dict] = None) -> ChildRun:
    """Run ``command`` to the end; its wall time, CPU time and peak RSS (MB)."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.TemporaryDirectory(prefix="lake-bench-run-") as scratch,
    ):
        report = os.path.join(scratch, "measures.json")
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, report, "--", *command], stdout=out, stderr=err, env=env
        )
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        if not os.path.exists(report):  # the launcher itself failed
            return ChildRun(list(command), 0.0, 0.0, done.returncode or 1, stdout, stderr)
        with open(report) as f:
            m = json.load(f)
        return ChildRun(
            list(command),
            m["seconds"],
            m["maxrss_kb"] / 1024.0,
            m["returncode"],
            stdout,
            stderr,
            m["cpu"],
            m["tree_kb"] / 1024.0,
            m["processes"],
        )


def python_module(module: str, *args: str) -> list:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def lake_command(*args: str) -> list:
    """The installed ``lake`` CLI next to this interpreter, as a user calls it."""
    return [os.path.join(os.path.dirname(sys.executable), "lake"), *args]


def child_env() -> dict:
    """The environment of a timed child: this process's, with this checkout importable."""
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env


def rate(rows: int, seconds: float) -> float:
    """Rows per second."""
    return rows / seconds if seconds > 0 else float("inf")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


class PeakMemory:
    """Peak RSS above the RSS at entry, of the block it wraps (Linux).

    The kernel's high-water mark is reset at entry (``/proc/self/clear_refs``)
    so the peak is the block's own, not the process's earlier one; where
    that reset is refused, a thread samples the RSS every 5 ms instead.
    """

    def __init__(self):
        self.before_mb = self.peak_mb = 0.0
        self._sampler = None
        self._stop = None

    def __enter__(self) -> "PeakMemory":
        self.before_mb = _status_kb("VmRSS") / 1024.0
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            import threading

            self._stop = threading.Event()
            self._sampled = self.before_mb

            def sample():
                while not self._stop.wait(0.005):
                    self._sampled = max(self._sampled, _status_kb("VmRSS") / 1024.0)

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak = max(self._sampled, _status_kb("VmRSS") / 1024.0)
        else:
            peak = _status_kb("VmHWM") / 1024.0
        self.peak_mb = max(0.0, peak - self.before_mb)
