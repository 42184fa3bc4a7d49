"""Processes, pids and ports: helper processes of a lake job, and which process a pid names.

Helper processes: started early, gone with the job.

The jobs hand work to helper processes (the quality gate's, the ingest's
validators) that they start with ``multiprocessing``'s ``spawn`` before
importing Beam, so the helpers' own imports overlap it. ``spawn``, not
``fork``: the job's process later runs gRPC and librdkafka threads that a
fork would copy mid-flight.

A helper waits on a pipe for work, and that pipe does not close when its job
is SIGKILLed or dies of OOM: measured, both validators of a SIGKILLed
``lake ingest`` stayed behind, idle, for good. So each helper watches its
parent and leaves with it.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, NamedTuple, Optional

__all__ = [
    "HelperPool",
    "init_helper",
    "ProcStat",
    "proc_stat",
    "same_process",
    "pid_alive",
    "all_processes",
    "process_tree",
    "reap",
    "port_free",
    "free_port",
    "BrokerInfo",
    "broker_state_dir",
    "broker_state_file",
    "running_broker",
    "running_broker_address",
    "install_stop_handlers",
    "collect_garbage_less",
]


class HelperPool:
    """One job's pool of helper processes, each importing ``warm_module`` as it starts.

    ``ignore_interrupts``: a terminal's Ctrl-C (and systemd's stop) signals
    the whole process group; a job that finishes its work in flight on the
    first one needs its helpers for that, and shuts them down itself.
    """

    def __init__(self, warm_module: str, ignore_interrupts: bool = False):
        self._warm = (warm_module, ignore_interrupts)
        self.executor: Optional[ProcessPoolExecutor] = None
        self.processes = 0
        self._started: list[Future] = []  # each helper's first task: its pid
        self._submitted: list[Future] = []  # what callers submitted and may still run

    def start(self, processes: int) -> None:
        """Start ``processes`` helpers now (none when 0). Idempotent."""
        if self.executor is not None or processes <= 0:
            return
        self.executor = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(*self._warm, os.getpid()),
        )
        self.processes = processes
        # The pool starts its processes as work arrives: have them start now.
        self._started = [self.executor.submit(_ready) for _ in range(processes)]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """``fn(*args)`` in a helper (as ``executor.submit``, whose errors it raises); see ``abandon``."""
        if self.executor is None:
            raise RuntimeError("the helper pool is not running")
        future = self.executor.submit(fn, *args)
        self._submitted = [f for f in self._submitted if not f.done()] + [future]
        return future

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor, self.processes = None, 0
            self._started, self._submitted = [], []

    def abandon(self, end_idle: bool = False) -> None:
        """Stop using the pool (a broken one, or one a job is done with) without waiting for it.

        ``end_idle``: when nothing submitted still runs, also end the helpers at once (``LEAVE_SIGNAL``). Idle,
        they have nothing to finish, and Python's exit waits for every pool's processes to exit: a
        helper that imported Great Expectations took 0.8 s to tear its interpreter down, a sixth of a
        Gold day's job at 1M events (measured)."""
        executor, self.executor, self.processes = self.executor, None, 0
        if executor is None:
            return
        started = [f for f in self._started if f.done() and not f.cancelled() and f.exception() is None]
        pids = {f.result() for f in started}
        ended = end_idle and len(started) == len(self._started) and all(f.done() for f in self._submitted)
        self._started, self._submitted = [], []
        if not ended:
            executor.shutdown(wait=False, cancel_futures=True)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, LEAVE_SIGNAL)
        executor.shutdown(wait=True, cancel_futures=True)  # a moment: they are leaving

    @contextlib.contextmanager
    def running(self, processes: int, wait: bool = True) -> Iterator[None]:
        """``start`` on entry, ``stop`` on exit, unless an outer caller started the pool (it stops it).

        ``wait=False``: on exit, end the helpers without waiting for them (``abandon(end_idle=True)``):
        a helper that imported a large library spends a second or more tearing its interpreter
        down, which the job need not wait for (a helper whose job is gone exits at once anyway).
        """
        if self.executor is not None or processes <= 0:
            yield
            return
        self.start(processes)
        try:
            yield
        finally:
            if wait:
                self.stop()
            else:
                self.abandon(end_idle=True)


#: What a job sends the idle helpers it is done with (``HelperPool.abandon``): leave now.
LEAVE_SIGNAL = signal.SIGUSR1


def _init(warm_module: str, ignore_interrupts: bool, parent: int) -> None:
    init_helper(ignore_interrupts, parent)
    signal.signal(LEAVE_SIGNAL, _leave)
    importlib.import_module(warm_module)


def _ready() -> int:
    return os.getpid()


def _leave(_signum: int, _frame: object) -> None:
    """Exit at once, without the interpreter's teardown, once the exit handlers ran: multiprocessing's
    among them releases what this process registered with the resource tracker (a helper ended by
    SIGKILL left a "leaked semaphore objects" warning at the job's end)."""
    atexit._run_exitfuncs()
    os._exit(0)


def init_helper(ignore_interrupts: bool = False, parent: Optional[int] = None) -> None:
    """What a helper process does first (``HelperPool``'s initializer): see ``HelperPool``.

    It exits when ``parent`` (the pid of the process that started it; default: its parent now) is
    no longer its parent. Pass it: a job killed while its helper was still starting (importing)
    has already handed the helper to init, and ``getppid()`` would then name init."""
    if ignore_interrupts:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=_exit_with, args=(parent,), name="exit-with-parent", daemon=True).start()


def _exit_with(parent: int, every: float = 0.5) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent:  # re-parented: the job is gone
            os._exit(0)


# -- which process a pid names ----------------------------------------------------------------------


class ProcStat(NamedTuple):
    state: str
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process for good


def proc_stat(pid: int) -> Optional[ProcStat]:
    """What ``/proc/PID/stat`` says of a live process; None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return ProcStat(fields[0], int(fields[1]), int(fields[2]), int(fields[19]))


def same_process(pid: int, start: int) -> bool:
    proc = proc_stat(pid)
    return proc is not None and proc.start == start


def all_processes() -> Dict[int, ProcStat]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = proc_stat(int(entry))
            if proc is not None:
                table[int(entry)] = proc
    return table


def process_tree(leader: int) -> Dict[int, ProcStat]:
    """The live processes of ``leader``'s group plus their descendants (a task may start its own group)."""
    table = all_processes()
    members = {pid for pid, proc in table.items() if proc.pgid == leader}
    while True:
        children = {pid for pid, proc in table.items() if proc.ppid in members} - members
        if not children:
            return {pid: table[pid] for pid in sorted(members)}
        members |= children


def reap(pids: Iterable[int]) -> None:
    """Collect those of ``pids`` that are exited children of this process (``up`` and ``down`` in one
    process, as in tests), so they stop counting as alive.  Only ours: reaping others' children would
    steal their exit codes."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def pid_alive(pid: int) -> bool:
    """``pid`` names a live process (a zombie counts as dead)."""
    return proc_stat(pid) is not None


# -- ports ------------------------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (another process may take it before the caller binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- the embedded broker's record ---------------------------------------------------------------------
# Written by ``lake broker start`` (``lake.local.broker``); read here too because settings resolve
# the default Kafka address from it.


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    bootstrap: str
    log: str
    start: Optional[int] = None  # the process's start time (``ProcStat.start``): pid + start name it for good

    def is_running(self) -> bool:
        """The recorded process still runs, and is the one recorded (not a later process given its pid)."""
        stat = proc_stat(self.pid)
        if stat is None:
            return False
        if self.start is not None:
            return stat.start == self.start
        try:  # a record from before start times were kept: trust only Tansu's own command line
            return b"tansu" in Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def broker_state_dir(lake_root: str) -> Path:
    """Where the pid file and log live: beside a local lake, else in the user's state dir."""
    if "://" in lake_root:
        return Path.home() / ".local" / "state" / "lake" / "broker"
    return Path(lake_root) / "_local" / "broker"


def broker_state_file(lake_root: str) -> Path:
    return broker_state_dir(lake_root) / "broker.json"


def running_broker(lake_root: str) -> Optional[BrokerInfo]:
    """The embedded broker this lake root started, if it still runs."""
    try:
        info = BrokerInfo(**json.loads(broker_state_file(lake_root).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if info.is_running() else None


def running_broker_address(lake_root: str) -> Optional[str]:
    info = running_broker(lake_root)
    return info.bootstrap if info else None


# -- stopping a pass-by-pass job --------------------------------------------------------------------


def install_stop_handlers(stop: threading.Event, what: str = "lake ingest") -> None:
    """First Ctrl-C (or SIGTERM): set ``stop`` (the pass in flight commits, then the run ends). Second: abort.

    Shared by every pass-by-pass job (``lake ingest``, ``lake stream``: ``what`` names it)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        # The process's own stderr, not ``sys.stderr``: the signal may land while some code has
        # redirected it (Beam's option parsing, each pass) and the line would go there.
        print(f"{what}: stopping after the pass in flight (Ctrl-C again to abort)", file=sys.__stderr__ or sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def collect_garbage_less() -> None:
    """For a job that allocates many small Python objects and keeps a large, long-lived heap (Beam's
    runner, the hot path's vehicle state): the collector's default first threshold (700 allocations)
    makes it rescan that heap again and again. Everything alive now is frozen out of its scans, and it
    runs a hundred times less often. Measured: the stream's catch-up 26,300 -> 33,000 events/s per
    process, a Gold day of 1M events 5.69 -> 4.98 s (medians of 4); Silver (Arrow, not Python objects)
    unchanged. Once per process: what is frozen is never collected, so a process running job after
    job (a test session, a worker) freezes only what it held at its first."""
    if _GC_TUNED:
        return
    _GC_TUNED.append(True)
    gc.freeze()
    gc.set_threshold(70_000, 20, 20)


_GC_TUNED: list = []
