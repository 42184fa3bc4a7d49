"""What every helper process of a lake job does first.

The jobs start helper processes (the quality gate's, the ingest's validators)
with ``multiprocessing``'s ``spawn``. A helper waits on a pipe for work, and
that pipe does not close when its job is SIGKILLed or dies of OOM: measured,
both validators of a SIGKILLed ``lake ingest`` stayed behind, idle, for good.
So each helper watches its parent and leaves with it.
"""
from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["init_helper"]


def init_helper(ignore_interrupts: bool = False) -> None:
    """Call first in a helper process (a pool ``initializer``).

    ``ignore_interrupts``: a terminal's Ctrl-C (and systemd's stop) signals
    the whole process group; a job that finishes its work in flight on the
    first one needs its helpers for that, and shuts them down itself.
    """
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
