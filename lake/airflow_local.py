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
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional

from .airflow_env import airflow_env, airflow_executable, airflow_home
from .errors import AirflowStackError, ConfigError

__all__ = ["COMPONENTS", "DEFAULT_PORT", "StackInfo", "ComponentState", "start", "stop", "status",
           "health", "is_healthy", "run_dir", "stack_env"]

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
ADMIN_USER = "admin"
START_TIMEOUT_S = 300.0  # ~17 s on an idle laptop; a loaded 2-core CI box needs far more
STOP_TIMEOUT_S = 30.0
MIGRATE_TIMEOUT_S = 300.0
# Airflow's defaults for the side servers the components open; a second stack
# on the same machine gets free ports instead of failing to bind.
_SIDE_PORTS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": 8974,
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": 8793,
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": 8794,
}

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


def run_dir(home: str) -> Path:
    return Path(home) / "run"


def _pid_file(home: str, component: str) -> Path:
    return run_dir(home) / f"{component}.pid"


def _log_file(home: str, component: str) -> Path:
    return run_dir(home) / f"{component}.log"


def _stack_file(home: str) -> Path:
    return run_dir(home) / "stack.json"


def passwords_file(home: str) -> Path:
    return run_dir(home) / "passwords.json"


# --- processes -----------------------------------------------------------------------------------

class _Proc(NamedTuple):
    state: str
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process for good


def _proc_stat(pid: int) -> Optional[_Proc]:
    """What ``/proc/PID/stat`` says of a live process; None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return _Proc(fields[0], int(fields[1]), int(fields[2]), int(fields[19]))


def _same_process(pid: int, start: int) -> bool:
    proc = _proc_stat(pid)
    return proc is not None and proc.start == start


def _is_our_leader(pid: int, start: Optional[int]) -> bool:
    """True when ``pid`` is the live process we started, still leading its own group.

    Identity is the pid plus its start time, as recorded in the pid file: a
    stale pid file whose pid the kernel has given to an unrelated program
    must not get that program killed. (The command line is no proof: right
    after ``exec`` it can read empty, and Airflow rewrites its own.)
    """
    proc = _proc_stat(pid)
    if proc is None or proc.pgid != pid:
        return False
    if start is None:  # a pid file without a start time (written by hand): trust only an Airflow command line
        try:
            return b"airflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    return proc.start == start


def _all_processes() -> Dict[int, _Proc]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _proc_stat(int(entry))
            if proc is not None:
                table[int(entry)] = proc
    return table


def _tree(leader: int) -> Dict[int, _Proc]:
    """The live processes of ``leader``'s group plus their descendants (a task may start its own group)."""
    table = _all_processes()
    members = {pid for pid, proc in table.items() if proc.pgid == leader}
    while True:
        children = {pid for pid, proc in table.items() if proc.ppid in members} - members
        if not children:
            return {pid: table[pid] for pid in sorted(members)}
        members |= children


def _reap(pids) -> None:
    """Collect those of ``pids`` that are exited children of this process (``up`` and ``down`` in one
    process, as in tests), so they stop counting as alive.  Only ours: reaping others' children would
    steal their exit codes."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _read_pid(home: str, component: str) -> tuple:
    """(pid, start time) from the pid file; (None, None) when absent or unreadable."""
    try:
        words = _pid_file(home, component).read_text().split()
        return int(words[0]), (int(words[1]) if len(words) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def _running(home: str) -> Dict[str, int]:
    """Components whose pid file names a live process group of ours; stale pid files are removed."""
    alive = {}
    for component in COMPONENTS:
        pid, start = _read_pid(home, component)
        if pid is None:
            _pid_file(home, component).unlink(missing_ok=True)
            continue
        _reap([pid])
        if _is_our_leader(pid, start):
            alive[component] = pid
        else:
            _pid_file(home, component).unlink(missing_ok=True)
    return alive


# --- configuration -------------------------------------------------------------------------------

def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(lake_root: str, host: str, port: int, home: Optional[str] = None,
              dags_folder: Optional[str] = None) -> dict:
    """``airflow_env`` plus what the four components need to find each other and the login."""
    env = airflow_env(lake_root, home=home, dags_folder=dags_folder)
    home = env["AIRFLOW_HOME"]
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    env.setdefault("AIRFLOW__CORE__AUTH_MANAGER",
                   "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{ADMIN_USER}:admin")
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords_file(home)))
    # Tasks report to the api-server's execution API; Airflow assumes localhost:8080.
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://{connect_host}:{port}/execution/")
    # Its 5 s default fails tasks (a retry minutes later) when one machine runs everything at once.
    env.setdefault("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30")
    for key, default in _SIDE_PORTS.items():
        if key not in env:
            env[key] = str(default if port_free("0.0.0.0", default) else _free_port())
    return env


def _first_user(env: dict) -> str:
    users = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "")
    return users.split(",")[0].split(":")[0].strip() or ADMIN_USER


def _seed_password(env: dict) -> None:
    """Give the login user a random password before the api-server would print one to its log."""
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError):
        passwords = {}
    user = _first_user(env)
    if not isinstance(passwords, dict) or not passwords.get(user):
        passwords = dict(passwords) if isinstance(passwords, dict) else {}
        passwords[user] = secrets.token_urlsafe(16)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(passwords) + "\n")


def _login(env: dict) -> tuple:
    user = _first_user(env)
    try:
        password = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text()).get(user, "")
    except (OSError, ValueError, AttributeError):
        password = ""
    return user, password


def _database(env: dict) -> str:
    from sqlalchemy.engine import make_url  # Airflow's dependency: present whenever Airflow is

    try:
        return make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: Airflow itself reports it on migrate
        return "(unparsable AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"


def _check_database_drivers(env: dict) -> None:
    """A PostgreSQL URL without its drivers fails deep in ``db migrate``; say what to install instead."""
    import importlib.util

    from sqlalchemy.engine import make_url

    try:
        url = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    except Exception:  # noqa: BLE001 - ``db migrate`` reports a malformed URL itself
        return
    if url.get_backend_name() != "postgresql":
        return
    wanted = [url.get_driver_name() or "psycopg2"]
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in env:
        wanted.append("asyncpg")  # Airflow derives its async connection as postgresql+asyncpg
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        packages = " ".join("psycopg2-binary" if name == "psycopg2" else name for name in missing)
        raise ConfigError(f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names PostgreSQL but {', '.join(missing)} "
                          f"is not installed: pip install {packages}")


# --- health --------------------------------------------------------------------------------------

# The health endpoint's name for each component that heartbeats.
_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


def _health_body(url: str, timeout: float = 5.0) -> Optional[dict]:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=timeout) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _statuses(body: Optional[dict]) -> Optional[dict]:
    if body is None:
        return None
    return {name: (part or {}).get("status") or "absent" for name, part in body.items()}


def health(url: str, timeout: float = 5.0) -> Optional[dict]:
    """``/api/v2/monitor/health`` as {component: status}; None when the api-server does not answer."""
    return _statuses(_health_body(url, timeout))


def is_healthy(report: Optional[dict]) -> bool:
    wanted = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return report is not None and all(report.get(name) == "healthy" for name in wanted)


def _heartbeat_since(body: dict, component: str, since: float) -> bool:
    """Has ``component`` heartbeaten since ``since`` (epoch s)?  The health of a component just
    (re)started must not be the last heartbeat of the one it replaces, still within the threshold."""
    key = _HEALTH_KEYS[component]
    beat = (body.get(key) or {}).get(f"latest_{key}_heartbeat")
    if not beat:
        return False
    try:
        return datetime.fromisoformat(beat).timestamp() >= since
    except ValueError:
        return False


def _last_error(path: Path) -> str:
    """The log's last exception line (``SomeError: why``), else its last line: one line for an error message."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line):
            return line
    return lines[-1] if lines else "empty log"


# --- up / down / status --------------------------------------------------------------------------

def _stack_meta(home: str) -> dict:
    try:
        return json.loads(_stack_file(home).read_text())
    except (OSError, ValueError):
        return {}


def _migrate(env: dict, home: str, progress: Progress) -> None:
    progress("airflow: migrating the metadata database ...")
    log = run_dir(home) / "db-migrate.log"
    with open(log, "wb") as out:
        try:
            code = subprocess.run([airflow_executable(), "db", "migrate"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=MIGRATE_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code != 0:
        raise AirflowStackError(f"`airflow db migrate` failed ({code}) for {_database(env)}: "
                                f"{_last_error(log)} (log: {log})")


def _spawn(component: str, env: dict, home: str, host: str, port: int) -> int:
    args = [airflow_executable(), component]
    if component == "api-server":
        args += ["--host", host, "--port", str(port)]
    log = _log_file(home, component)
    with open(log, "ab") as out:
        out.write(f"\n--- lake airflow up: {component} starting at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        out.flush()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own group: `down` stops it with its workers
    proc_stat = _proc_stat(proc.pid)
    _pid_file(home, component).write_text(f"{proc.pid} {proc_stat.start if proc_stat else ''}\n")
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


def start(lake_root: str, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, timeout: float = START_TIMEOUT_S,
          progress: Progress = lambda line: None, home: Optional[str] = None,
          dags_folder: Optional[str] = None) -> StackInfo:
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


def _start(lake_root: str, port: int, host: str, timeout: float, progress: Progress, home: str,
           dags_folder: Optional[str]) -> StackInfo:
    running = _running(home)
    meta = _stack_meta(home)
    if running:  # keep the port the running api-server already listens on
        host, port = meta.get("host", host), int(meta.get("port", port))
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    env = stack_env(lake_root, host, port, home=home, dags_folder=dags_folder)
    missing = [c for c in COMPONENTS if c not in running]
    if not missing:
        user, password = _login(env)
        return StackInfo(url=url, user=user, password=password, home=home, database=_database(env),
                         pids=running, already_running=True)
    if "api-server" in missing and not port_free(host, port):
        raise ConfigError(f"port {port} on {host} is taken: stop what listens there or pass --port")
    _check_database_drivers(env)
    _seed_password(env)
    _stack_file(home).write_text(json.dumps({"host": host, "port": port, "url": url}) + "\n")
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
        _wait(home, url, deadline, progress, list(COMPONENTS),
              lambda body: is_healthy(_statuses(body)) and all(_heartbeat_since(body, c, since) for c in rest),
              "all healthy")
    except BaseException:
        stop(lake_root, home=home, only=started)
        raise
    user, password = _login(env)
    return StackInfo(url=url, user=user, password=password, home=home, database=_database(env), pids=running)


def _wait(home: str, url: str, deadline: float, progress: Progress, components: List[str],
          done: Callable[[Optional[dict]], bool], goal: str) -> None:
    """Poll the health endpoint until ``done(its body)``; fail fast when one of ``components`` exits."""
    began = time.monotonic()
    last_report = began
    while True:
        alive = _running(home)
        dead = [c for c in components if c not in alive]
        if dead:
            log = _log_file(home, dead[0])
            raise AirflowStackError(f"airflow {dead[0]} exited while starting: {_last_error(log)} (log: {log})")
        body = _health_body(url)
        now = time.monotonic()
        if done(body):
            progress(f"airflow: {goal} after {now - began:.0f} s")
            return
        if now > deadline:
            raise AirflowStackError(f"airflow not healthy in time ({_describe(_statuses(body))}); "
                                    f"pass a longer --timeout or read the logs in {run_dir(home)}")
        if now - last_report >= 5:
            progress(f"airflow: waiting ({now - began:.0f} s): {_describe(_statuses(body))}")
            last_report = now
        time.sleep(1)


def _describe(report: Optional[dict]) -> str:
    if report is None:
        return "api-server not answering yet"
    return ", ".join(f"{name} {state}" for name, state in report.items())


def stop(lake_root: str, timeout: float = STOP_TIMEOUT_S, home: Optional[str] = None,
         only: Optional[List[str]] = None) -> Dict[str, int]:
    """SIGTERM every component's process group, SIGKILL what is left after ``timeout``; {component: pid}."""
    home = home or airflow_home(lake_root)
    running = {c: pid for c, pid in _running(home).items() if only is None or c in only}
    victims = {(pid, proc.start) for leader in running.values() for pid, proc in _tree(leader).items()}
    for leader in running.values():
        _signal_group(leader, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        _reap(running.values())
        victims = {(pid, start) for pid, start in victims if _same_process(pid, start)}
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
        _reap(running.values())
    for component in running:
        _pid_file(home, component).unlink(missing_ok=True)
    return running


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def status(lake_root: str, home: Optional[str] = None) -> tuple:
    """([ComponentState], url or None, health report or None)."""
    home = home or airflow_home(lake_root)
    running = _running(home)
    states = [ComponentState(c, running.get(c), str(_log_file(home, c))) for c in COMPONENTS]
    url = _stack_meta(home).get("url") if running else None
    report = health(url) if url and "api-server" in running else None
    return states, url, report
