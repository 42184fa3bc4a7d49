"""A local Airflow for the lake: api-server, scheduler, dag-processor, triggerer.

``airflow standalone`` leaves orphaned workers behind when stopped, so the
four components run as separate background processes instead, each the
leader of its own process group (stopping a group also stops the LocalExecutor
workers and log servers the component forked). Everything lives under the
Airflow home (``{LAKE_ROOT}/_local/airflow``): the metadata database (SQLite,
unless ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` names another), ``airflow.cfg``
with the secrets Airflow generates on first use, and ``run/`` with one pid
file and one log per component.

The UI login is SimpleAuthManager's: user ``admin`` (role admin) with a
random password generated into ``run/passwords.json`` on the first ``up``.
That file is the local stack's only credential; production configures a
real auth manager instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from lake.local.airflow.config import check_database_drivers, database, login, seed_password, stack_env
from lake.local.airflow.env import airflow_executable, airflow_home
from lake.local.airflow.health import health, health_body, heartbeat_since, is_healthy, last_error, statuses
from lake.local.airflow.run_files import COMPONENTS, log_file, pid_file, run_dir, running_components, stack_file
from lake_core.errors import AirflowStackError, ConfigError
from lake_core.processes import port_free, proc_stat, process_tree, reap, same_process

__all__ = [
    "COMPONENTS",
    "DEFAULT_PORT",
    "StackInfo",
    "ComponentState",
    "start",
    "stop",
    "status",
    "health",
    "is_healthy",
    "run_dir",
    "stack_env",
]

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
START_TIMEOUT_S = 300.0  # ~17 s on an idle laptop; a loaded 2-core CI box needs far more
STOP_TIMEOUT_S = 30.0
MIGRATE_TIMEOUT_S = 300.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StackInfo:
    """What ``up`` started (or found running) and how to log in."""

    url: str
    user: str
    password: str
    home: str
    database: str  # the connection URL, password hidden
    pids: Dict[str, int] = field(default_factory=dict)
    already_running: bool = False


@dataclass(frozen=True)
class ComponentState:
    name: str
    pid: Optional[int]  # None: not running
    log: str


def _stack_meta(home: str) -> dict:
    try:
        return json.loads(stack_file(home).read_text())
    except (OSError, ValueError):
        return {}


def _migrate(env: dict, home: str, progress: Progress) -> None:
    progress("airflow: migrating the metadata database ...")
    log = run_dir(home) / "db-migrate.log"
    with open(log, "wb") as out:
        try:
            code = subprocess.run(
                [airflow_executable(), "db", "migrate"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=MIGRATE_TIMEOUT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code != 0:
        raise AirflowStackError(
            f"`airflow db migrate` failed ({code}) for {database(env)}: {last_error(log)} (log: {log})"
        )


def _spawn(component: str, env: dict, home: str, host: str, port: int) -> int:
    args = [airflow_executable(), component]
    if component == "api-server":
        args += ["--host", host, "--port", str(port)]
    log = log_file(home, component)
    with open(log, "ab") as out:
        out.write(f"\n--- lake airflow up: {component} starting at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )  # its own group: `down` stops it with its workers
    stat = proc_stat(proc.pid)
    pid_file(home, component).write_text(f"{proc.pid} {stat.start if stat else ''}\n")
    return proc.pid


@contextmanager
def _only_one_up(home: str):
    """Two ``up`` at once on one home would start every component twice: the second one is refused."""
    run_dir(home).mkdir(parents=True, exist_ok=True)
    lock = run_dir(home) / "up.lock"
    with open(lock, "w") as handle:  # not inherited by the components (Python opens files close-on-exec)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AirflowStackError(f"another `lake airflow up` is starting this Airflow (lock {lock})") from None
        yield


def start(
    lake_root: str,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    timeout: float = START_TIMEOUT_S,
    progress: Progress = lambda line: None,
    home: Optional[str] = None,
    dags_folder: Optional[str] = None,
) -> StackInfo:
    """Start the missing components, wait until all four are healthy, return the URL and login.

    Idempotent: a stack that already runs is reported, not restarted; a
    component that died is started again on the stack's recorded port.
    On failure or Ctrl-C while waiting, the components started here are stopped.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    if not os.access(airflow_executable(), os.X_OK):
        raise ConfigError(f"no Airflow at {airflow_executable()}: pip install -e '.[airflow]'")
    home = home or airflow_home(lake_root)
    with _only_one_up(home):
        return _start(lake_root, port, host, timeout, progress, home, dags_folder)


def _start(
    lake_root: str, port: int, host: str, timeout: float, progress: Progress, home: str, dags_folder: Optional[str]
) -> StackInfo:
    running = running_components(home)
    meta = _stack_meta(home)
    if running:  # keep the port the running api-server already listens on
        host, port = meta.get("host", host), int(meta.get("port", port))
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    env = stack_env(lake_root, host, port, home=home, dags_folder=dags_folder)
    missing = [c for c in COMPONENTS if c not in running]
    if not missing:
        user, password = login(env)
        return StackInfo(
            url=url, user=user, password=password, home=home, database=database(env), pids=running, already_running=True
        )
    if "api-server" in missing and not port_free(host, port):
        raise ConfigError(f"port {port} on {host} is taken: stop what listens there or pass --port")
    check_database_drivers(env)
    seed_password(env)
    stack_file(home).write_text(json.dumps({"host": host, "port": port, "url": url}) + "\n")
    if not running:  # components still running prove the database is migrated
        _migrate(env, home, progress)
    deadline = time.monotonic() + timeout
    started: List[str] = []
    try:
        # The api-server first: tasks the scheduler starts at once report to its execution API,
        # and fail (retried only minutes later) if it does not answer yet.
        if "api-server" in missing:
            running["api-server"] = _spawn("api-server", env, home, host, port)
            started.append("api-server")
            progress(f"airflow: started api-server; waiting until it answers at {url} ...")
            _wait(home, url, deadline, progress, started, lambda body: body is not None, "api-server answering")
        rest = [c for c in missing if c != "api-server"]
        since = time.time() - 1  # heartbeats carry no sub-second guarantee across processes
        for component in rest:
            running[component] = _spawn(component, env, home, host, port)
            started.append(component)
        progress(f"airflow: started {', '.join(rest)}; waiting until all are healthy ...")
        _wait(
            home,
            url,
            deadline,
            progress,
            list(COMPONENTS),
            lambda body: is_healthy(statuses(body)) and all(heartbeat_since(body, c, since) for c in rest),
            "all healthy",
        )
    except BaseException:
        stop(lake_root, home=home, only=started)
        raise
    user, password = login(env)
    return StackInfo(url=url, user=user, password=password, home=home, database=database(env), pids=running)


def _wait(
    home: str,
    url: str,
    deadline: float,
    progress: Progress,
    components: List[str],
    done: Callable[[Optional[dict]], bool],
    goal: str,
) -> None:
    """Poll the health endpoint until ``done(its body)``; fail fast when one of ``components`` exits."""
    began = time.monotonic()
    last_report = began
    while True:
        alive = running_components(home)
        dead = [c for c in components if c not in alive]
        if dead:
            log = log_file(home, dead[0])
            raise AirflowStackError(f"airflow {dead[0]} exited while starting: {last_error(log)} (log: {log})")
        body = health_body(url)
        now = time.monotonic()
        if done(body):
            progress(f"airflow: {goal} after {now - began:.0f} s")
            return
        if now > deadline:
            raise AirflowStackError(
                f"airflow not healthy in time ({_describe(statuses(body))}); "
                f"pass a longer --timeout or read the logs in {run_dir(home)}"
            )
        if now - last_report >= 5:
            progress(f"airflow: waiting ({now - began:.0f} s): {_describe(statuses(body))}")
            last_report = now
        time.sleep(1)


def _describe(report: Optional[dict]) -> str:
    if report is None:
        return "api-server not answering yet"
    return ", ".join(f"{name} {state}" for name, state in report.items())


def stop(
    lake_root: str, timeout: float = STOP_TIMEOUT_S, home: Optional[str] = None, only: Optional[List[str]] = None
) -> Dict[str, int]:
    """SIGTERM every component's process group, SIGKILL what is left after ``timeout``; {component: pid}."""
    home = home or airflow_home(lake_root)
    running = {c: pid for c, pid in running_components(home).items() if only is None or c in only}
    victims = {(pid, proc.start) for leader in running.values() for pid, proc in process_tree(leader).items()}
    for leader in running.values():
        _signal_group(leader, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        reap(running.values())
        victims = {(pid, start) for pid, start in victims if same_process(pid, start)}
        if not victims or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid, _ in victims:  # stragglers, including workers that left their group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if victims:
        time.sleep(0.2)
        reap(running.values())
    for component in running:
        pid_file(home, component).unlink(missing_ok=True)
    return running


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def status(lake_root: str, home: Optional[str] = None) -> tuple:
    """([ComponentState], url or None, health report or None)."""
    home = home or airflow_home(lake_root)
    running = running_components(home)
    states = [ComponentState(c, running.get(c), str(log_file(home, c))) for c in COMPONENTS]
    url = _stack_meta(home).get("url") if running else None
    report = health(url) if url and "api-server" in running else None
    return states, url, report
