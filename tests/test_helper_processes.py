"""A lake job's helper processes leave with the job, however it ends."""

import multiprocessing
import os
import signal
import time

import psutil

from lake_core.processes import init_helper


def _helper_then_block(ready):
    init_helper(ignore_interrupts=True)
    ready.set()
    time.sleep(600)  # a helper idle on its pipe, as after its job died


def _job(ready):
    ctx = multiprocessing.get_context("spawn")
    ctx.Process(target=_helper_then_block, args=(ready,)).start()
    time.sleep(600)


def _gone(pid: int, timeout: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout)
        return True
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False


def test_a_helper_leaves_when_its_job_is_sigkilled():
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    job = ctx.Process(target=_job, args=(ready,))
    job.start()
    helper = None
    try:
        assert ready.wait(60), "the helper never started"
        (helper,) = psutil.Process(job.pid).children()
        os.kill(job.pid, signal.SIGKILL)
        job.join(10)
        assert _gone(helper.pid, timeout=5), "the helper outlived its SIGKILLed job"
    finally:
        job.kill()
        if helper is not None and helper.is_running():
            helper.kill()


def test_a_helper_that_ignores_interrupts_survives_ctrl_c_to_the_group():
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    helper = ctx.Process(target=_helper_then_block, args=(ready,))
    helper.start()
    try:
        assert ready.wait(60)
        os.kill(helper.pid, signal.SIGINT)
        os.kill(helper.pid, signal.SIGTERM)
        helper.join(1)
        assert helper.is_alive(), "Ctrl-C or SIGTERM killed a helper its job still needs"
    finally:
        helper.kill()
        helper.join()
