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


def test_a_helper_whose_job_died_while_it_was_starting_leaves_at_once(tmp_path):
    """The job was killed while its helper still imported (seconds, for Beam): by then the helper
    belongs to init, and a watch that took ``getppid()`` as its job would wait on init for ever."""
    import subprocess
    import sys

    started, log = tmp_path / "started", tmp_path / "helper.log"
    code = (
        "import os, sys, time\n"
        f"open({str(started)!r}, 'w').write(str(os.getpid()))\n"
        "while os.getppid() == int(sys.argv[1]): time.sleep(0.05)  # still importing when its job dies\n"
        "from lake_core.processes import init_helper\n"
        "init_helper(parent=int(sys.argv[1]))\n"
        "time.sleep(600)\n"
    )
    job_code = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {code!r}, str(os.getpid())], stderr=open({str(log)!r}, 'w'))\n"
        "time.sleep(600)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", job_code])
    try:
        deadline = time.monotonic() + 60
        while not (started.exists() and started.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        helper = int(started.read_text())
        job.kill()
        job.wait()
        assert _gone(helper, timeout=10), "the helper outlived a job that died while it started"
        assert log.read_text() == "", log.read_text()  # it left by the watch, not by an error
    finally:
        job.kill()
        if started.exists() and started.read_text() and not _gone(int(started.read_text()), timeout=0):
            os.kill(int(started.read_text()), signal.SIGKILL)  # only ours: the session's broker is a child too


def test_the_first_ctrl_c_is_said_on_the_real_stderr_while_code_redirects_sys_stderr():
    """Each ingest pass parses Beam's options with ``sys.stderr`` redirected; a Ctrl-C landing then
    must still tell the operator that the run stops after its pass (it was lost to the redirect)."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, os, signal, threading\n"
        "from lake_core.processes import install_stop_handlers\n"
        "stop = threading.Event()\n"
        "install_stop_handlers(stop)\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    stop.wait(10)\n"
        "print('stop set' if stop.is_set() else 'stop not set')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "stop set", done
    assert "lake ingest: stopping after the pass in flight" in done.stderr, done.stderr


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_pool_the_job_is_done_with_ends_its_idle_helpers_at_once_and_never_a_busy_one():
    from lake_core.processes import HelperPool

    pool = HelperPool("support.slow_teardown")  # a teardown of 5 s: not waited for
    started = time.monotonic()
    with pool.running(1, wait=False):
        helper = pool.submit(_sleep, 0).result(timeout=60)
        started = time.monotonic()
    assert time.monotonic() - started < 3, "the job waited for its helper's teardown"
    assert _gone(helper, timeout=1), "an idle helper outlived its pool"

    busy = HelperPool("json")
    busy.start(1)
    helper = busy.submit(_sleep, 0).result(timeout=60)
    work = busy.submit(_sleep, 2)
    time.sleep(0.5)  # running now
    busy.abandon(end_idle=True)
    assert psutil.Process(helper).is_running(), "a helper was ended in the middle of its work"
    assert work.result(timeout=30) == helper  # it finished it
