"""Helper processes of a lake job: started early, gone with the job.

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

import contextlib
import importlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

__all__ = ["HelperPool", "init_helper"]


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

    def start(self, processes: int) -> None:
        """Start ``processes`` helpers now (none when 0). Idempotent."""
        if self.executor is not None or processes <= 0:
            return
        self.executor = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init, initargs=self._warm)
        self.processes = processes
        for _ in range(processes):  # the pool starts its processes as work arrives: have them start now
            self.executor.submit(_ready)

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor, self.processes = None, 0

    def abandon(self) -> None:
        """Stop using a broken pool without waiting for it."""
        executor, self.executor, self.processes = self.executor, None, 0
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def running(self, processes: int):
        """``start`` on entry, ``stop`` on exit, unless an outer caller started the pool (it stops it)."""
        if self.executor is not None or processes <= 0:
            yield
            return
        self.start(processes)
        try:
            yield
        finally:
            self.stop()


def _init(warm_module: str, ignore_interrupts: bool) -> None:
    init_helper(ignore_interrupts)
    importlib.import_module(warm_module)


def _ready() -> bool:
    return True


def init_helper(ignore_interrupts: bool = False) -> None:
    """What a helper process does first (``HelperPool``'s initializer): see ``HelperPool``."""
    if ignore_interrupts:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), name="exit-with-parent", daemon=True).start()


def _exit_with(parent: int, every: float = 0.5) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent:  # re-parented: the job is gone
            os._exit(0)
