"""``lake airflow up|down`` and the Airflow UI in a real headless Chromium.

One stack serves the module: the four real Airflow components on a tmp lake
with a free port and the repository's real ``dags/``. The browser logs in
through the login form, finds every DAG of ``DAG_IDS`` and no import error,
triggers a run with the UI's Trigger button and, once the REST API says the
run succeeded, screenshots the run page (kept in the test's tmp dir and in
``test-output/airflow_ui.png``). ``down`` must then leave no process behind.
The stack's DAGs start paused (only the triggered one is unpaused), so no
catch-up competes with the run under test for the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed (pip install -e '.[airflow]')")

from lake.cli import main  # noqa: E402
from lake.local.airflow import run_files  # noqa: E402
from lake.local.airflow import stack as airflow_local  # noqa: E402
from lake.local.airflow.env import DAG_IDS, DAGS_FOLDER  # noqa: E402
from lake_core import processes  # noqa: E402
from lake_core.processes import free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TRIGGERED_DAG = "telemetry_maintenance"  # the cheapest DAG to run on a small lake
RUN_TIMEOUT_S = 300
PARSE_TIMEOUT_S = 240
UI_TIMEOUT_S = 90


# --- helpers ----------------------------------------------------------------------------------------


def _log_tails(home: str, lines: int = 25) -> str:
    parts = []
    for path in sorted(airflow_local.run_dir(home).glob("*.log")):
        tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        parts.append(f"--- {path.name} (last {lines} lines)\n{tail}")
    return "\n".join(parts)


def _fail(stack, message: str):
    pytest.fail(f"{message}\n{_log_tails(stack.info.home)}", pytrace=False)


def _isolate(mp) -> None:
    """Another Airflow's home, config or DAG folder in the caller's environment must not leak in."""
    for name in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW_CONFIG"):
        mp.delenv(name, raising=False)


def _alive(started: dict) -> list:
    """Those of ``started`` ({pid: start time}) still alive, identified by pid and start time."""
    return [pid for pid, start in started.items() if processes.same_process(pid, start)]


class Stack:
    def __init__(self, root: str, info: airflow_local.StackInfo):
        self.root = root
        self.info = info
        self._token = None

    def api(self, path: str, body=None, method=None):
        if self._token is None:
            self._token = _post_json(
                f"{self.info.url}/auth/token", {"username": self.info.user, "password": self.info.password}
            )["access_token"]
        request = urllib.request.Request(
            f"{self.info.url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _small_lake(root: str) -> None:
    """One complete Bronze hour: something for the maintenance run to look at."""
    from support.bronze_builder import SECOND, T0, BronzeBuilder

    bronze = BronzeBuilder(root)
    for i in range(5):
        bronze.snapshot("V1", f"e{i}", T0 + i * SECOND, T0 + i * SECOND, location={"lat": 52.0, "lon": 13.0})
    bronze.write()


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow_ui") / "lake"
    _small_lake(str(root))
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp)
        # Paused until a test unpauses one: the hourly DAG's catch-up would run Beam jobs on the lake's
        # Bronze hour and compete for the machine's two cores with the run under test.
        mp.setenv("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
        home = airflow_local.airflow_home(str(root))
        try:
            info = airflow_local.start(str(root), port=free_port(), progress=print)
        except Exception as exc:  # noqa: BLE001 - show why, with the components' logs
            airflow_local.stop(str(root))
            pytest.fail(f"lake airflow up failed: {exc}\n{_log_tails(home)}", pytrace=False)
        yield Stack(str(root), info)
        airflow_local.stop(str(root))


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("needs Debian's chromium and chromium-driver packages (scripts/system-deps installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    # Both paths given: Selenium Manager has nothing to look up or download.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(UI_TIMEOUT_S)
    yield driver
    driver.quit()


def _wait(driver, condition, stack, what: str, timeout: float = UI_TIMEOUT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        _fail(
            stack,
            f"UI: {what} not seen within {timeout} s at {driver.current_url}; page text:\n"
            f"{driver.find_element('tag name', 'body').text[:1500]}",
        )


def _body_text(driver) -> str:
    return driver.find_element("tag name", "body").text


# --- the UI -----------------------------------------------------------------------------------------


@pytest.mark.airflow
def test_up_prints_url_and_login(stack):
    assert stack.info.url.startswith("http://127.0.0.1:")
    assert stack.info.user == "admin" and len(stack.info.password) >= 16
    stored = json.loads(run_files.passwords_file(stack.info.home).read_text())
    assert stored == {"admin": stack.info.password}
    assert stack.info.database.startswith(("sqlite:///", "postgresql"))
    assert airflow_local.is_healthy(airflow_local.health(stack.info.url))


@pytest.mark.airflow
@pytest.mark.browser
def test_ui_login_lists_the_dags_without_import_errors(stack, browser):
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + PARSE_TIMEOUT_S
    while True:  # only the dag-processor fills the DAG table: wait for its first pass over dags/
        listed = {d["dag_id"]: d["fileloc"] for d in stack.api("/api/v2/dags?limit=100")["dags"]}
        errors = stack.api("/api/v2/importErrors")
        if set(DAG_IDS) <= set(listed) or errors["total_entries"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert errors["total_entries"] == 0, [(e["filename"], e["stack_trace"][-300:]) for e in errors["import_errors"]]
    assert set(DAG_IDS) <= set(listed), f"DAGs parsed so far: {sorted(listed)}"
    assert all(Path(listed[d]).parent == Path(DAGS_FOLDER) for d in DAG_IDS), listed  # the repository's dags/

    browser.get(f"{stack.info.url}/dags")
    user = _wait(browser, lambda d: d.find_elements(By.NAME, "username"), stack, "the login form")[0]
    assert "/auth/login" in browser.current_url  # not logged in: the UI sent us to its login form
    user.send_keys(stack.info.user)
    browser.find_element(By.NAME, "password").send_keys(stack.info.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: "/auth/login" not in d.current_url, stack, "the redirect after login")

    for dag_id in DAG_IDS:
        _wait(
            browser,
            lambda d, dag_id=dag_id: d.find_elements(By.CSS_SELECTOR, f"a[href$='/dags/{dag_id}']"),
            stack,
            f"the link to DAG {dag_id}",
        )

    # The home page's stats row shows a "Dag Import Error" card only when there are any.
    browser.get(f"{stack.info.url}/")
    _wait(
        browser,
        lambda d: "Failed Dags" in _body_text(d) and "Dag Processor" in _body_text(d),
        stack,
        "the home page's stats and health",
    )
    assert "Import Error" not in _body_text(browser)


@pytest.mark.airflow
@pytest.mark.browser
def test_triggered_run_turns_green(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By

    assert stack.api(f"/api/v2/dags/{TRIGGERED_DAG}", {"is_paused": False}, method="PATCH")["is_paused"] is False
    browser.get(f"{stack.info.url}/dags/{TRIGGERED_DAG}")
    _wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"),
        stack,
        "the Trigger button",
    )[0].click()
    dialog = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=dialog]"), stack, "the trigger dialog")
    confirm = _wait(
        browser,
        lambda d: [
            b
            for b in d.find_elements(By.CSS_SELECTOR, "[role=dialog] button")
            if b.text.strip() == "Trigger" and b.is_enabled()
        ],
        stack,
        "the dialog's Trigger button",
    )
    assert dialog
    confirm[0].click()
    # The UI opens the new run's page: its id is in the URL.
    _wait(browser, lambda d: f"/dags/{TRIGGERED_DAG}/runs/" in d.current_url, stack, "the new run's page")
    run_id = urllib.parse.unquote(browser.current_url.split("/runs/", 1)[1].split("/")[0].split("?")[0])

    run_path = f"/api/v2/dags/{TRIGGERED_DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = stack.api(run_path)
        tasks = {t["task_id"]: t["state"] for t in stack.api(f"{run_path}/taskInstances")["task_instances"]}
        broken = run["state"] == "failed" or {"failed", "up_for_retry", "upstream_failed"} & set(tasks.values())
        if run["state"] == "success" or broken or time.monotonic() > deadline:
            break
        time.sleep(3)
    if run["state"] != "success":  # a retry would only come minutes later: report the first failure now
        _fail(stack, f"run {run_id} is {run['state']!r} after {RUN_TIMEOUT_S} s or failed; tasks: {tasks}")
    assert run["triggered_by"] == "ui"
    # The run worked on this stack's lake: LAKE_ROOT reached the task.
    result = stack.api(f"{run_path}/taskInstances/maintain/xcomEntries/return_value")
    assert stack.root in str(result["value"]), result

    browser.refresh()
    _wait(browser, lambda d: "Success" in _body_text(d), stack, "the run's Success badge")
    shot = tmp_path / "airflow_ui.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    kept = REPO / "test-output" / "airflow_ui.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, kept)


@pytest.mark.airflow
def test_up_restarts_a_component_that_died(stack, capsys):
    import signal

    triggerer = run_files.running_components(stack.info.home)["triggerer"]
    os.killpg(triggerer, signal.SIGKILL)  # and its log server: the whole group, as a crash or OOM kill would
    deadline = time.monotonic() + 10
    while "triggerer" in run_files.running_components(stack.info.home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert main(["airflow", "up", "--lake-root", stack.root]) == 0
    out, err = capsys.readouterr()
    assert "started triggerer;" in err and "migrating" not in err and "api-server;" not in err, err
    assert f"Airflow UI: {stack.info.url}" in out
    running = run_files.running_components(stack.info.home)
    assert running["triggerer"] != triggerer
    assert {c: running[c] for c in running if c != "triggerer"} == {
        c: pid for c, pid in stack.info.pids.items() if c != "triggerer"
    }
    assert airflow_local.is_healthy(airflow_local.health(stack.info.url))


@pytest.mark.airflow
def test_up_again_says_already_running(stack, capsys):
    assert main(["airflow", "up", "--lake-root", stack.root]) == 0
    out, err = capsys.readouterr()
    assert "already running" in err
    assert f"Airflow UI: {stack.info.url}" in out and f"login:      admin / {stack.info.password}" in out
    assert main(["airflow", "status", "--lake-root", stack.root]) == 0
    assert f"running at {stack.info.url}" in capsys.readouterr().out


@pytest.mark.airflow
def test_down_leaves_no_process_behind(stack, capsys):
    leaders = run_files.running_components(stack.info.home)
    assert sorted(leaders) == sorted(airflow_local.COMPONENTS)
    everything = {
        pid: proc.start for leader in leaders.values() for pid, proc in processes.process_tree(leader).items()
    }
    assert len(everything) > len(leaders)  # the workers and log servers the components forked
    began = time.monotonic()
    assert main(["airflow", "down", "--lake-root", stack.root]) == 0
    assert "stopped api-server" in capsys.readouterr().out
    assert time.monotonic() - began < airflow_local.STOP_TIMEOUT_S + 10
    assert _alive(everything) == []
    assert not list(airflow_local.run_dir(stack.info.home).glob("*.pid"))
    assert main(["airflow", "status", "--lake-root", stack.root]) == 1
    assert "not running" in capsys.readouterr().out


# --- cheap edge cases (no stack) ----------------------------------------------------------------------


def test_status_when_not_running(tmp_path, capsys):
    assert main(["airflow", "status", "--lake-root", str(tmp_path)]) == 1
    assert capsys.readouterr().out.strip() == "airflow: not running"


def test_down_when_not_running(tmp_path, capsys):
    assert main(["airflow", "down", "--lake-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no local Airflow running"


def test_port_taken_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["airflow", "up", "--lake-root", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port}" in err and "taken" in err and "--port" in err
    assert "Traceback" not in err
    assert not list(airflow_local.run_dir(airflow_local.airflow_home(str(tmp_path))).glob("*.pid"))


def test_a_second_up_while_one_is_starting_is_refused(tmp_path, capsys):
    import fcntl

    run = airflow_local.run_dir(airflow_local.airflow_home(str(tmp_path)))
    run.mkdir(parents=True)
    with open(run / "up.lock", "w") as held:  # what a first `up`, still waiting for health, holds
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["airflow", "up", "--lake-root", str(tmp_path), "--port", str(free_port())]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another `lake airflow up` is starting" in err
    assert not list(run.glob("*.pid"))


def test_bad_port_and_timeout_are_flag_errors(tmp_path, capsys):
    assert main(["airflow", "up", "--lake-root", str(tmp_path), "--port", "70000"]) == 2
    assert "70000" in capsys.readouterr().err
    assert main(["airflow", "up", "--lake-root", str(tmp_path), "--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err


@pytest.mark.airflow
def test_component_dying_at_start_is_reported_and_cleaned_up(tmp_path, monkeypatch, capsys):
    # A certificate without its key: the api-server refuses to start as soon as it reads its flags.
    monkeypatch.setenv("AIRFLOW__API__SSL_CERT", str(tmp_path / "no-such-cert.pem"))
    _isolate(monkeypatch)
    root = str(tmp_path)
    home = airflow_local.airflow_home(root)
    spawned = {}

    def spawn(*args):
        pid = real_spawn(*args)
        proc = processes.proc_stat(pid)
        spawned[pid] = proc.start if proc else None
        return pid

    real_spawn = airflow_local._spawn
    monkeypatch.setattr(airflow_local, "_spawn", spawn)
    assert main(["airflow", "up", "--lake-root", root, "--port", str(free_port())]) == 6
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lake: error: airflow api-server exited while starting: ") and "SSL key" in err, err
    assert len(spawned) == 1  # the others start only once the api-server answers
    assert _alive(spawned) == [], _log_tails(home)
    assert not list(airflow_local.run_dir(home).glob("*.pid"))


def test_stale_pid_files_are_ignored_and_strangers_left_alone(tmp_path, capsys):
    home = airflow_local.airflow_home(str(tmp_path))
    airflow_local.run_dir(home).mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    # A live process in its own group that is not Airflow: a pid the kernel reused.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = processes.proc_stat(stranger.pid).start
        (airflow_local.run_dir(home) / "scheduler.pid").write_text(f"{gone.pid}\n")
        (airflow_local.run_dir(home) / "api-server.pid").write_text(f"{stranger.pid}\n")  # not Airflow
        (airflow_local.run_dir(home) / "dag-processor.pid").write_text(f"{stranger.pid} {start + 1}\n")  # reused
        (airflow_local.run_dir(home) / "triggerer.pid").write_text("not a pid\n")
        assert main(["airflow", "status", "--lake-root", str(tmp_path)]) == 1
        assert main(["airflow", "down", "--lake-root", str(tmp_path)]) == 0
        assert "no local Airflow running" in capsys.readouterr().out
        assert stranger.poll() is None
        assert not list(airflow_local.run_dir(home).glob("*.pid"))
    finally:
        stranger.kill()
        stranger.wait()


# --- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    psycopg2 = pytest.importorskip("psycopg2", reason="no PostgreSQL driver (pip install -e '.[airflow]')")
    pytest.importorskip("asyncpg", reason="no async PostgreSQL driver for Airflow (pip install -e '.[airflow]')")
    host, port = os.environ.get("LAKE_TEST_PGHOST", "127.0.0.1"), int(os.environ.get("LAKE_TEST_PGPORT", "5432"))
    try:
        admin = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {host}:{port} as postgres: {str(exc).strip()}")
    admin.autocommit = True
    name = f"lake_airflow_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg2://postgres@{host}:{port}/{name}"
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.mark.airflow
def test_up_on_postgresql(postgres_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", postgres_url)
    _isolate(monkeypatch)
    root = str(tmp_path)
    port = free_port()
    try:
        code = main(["airflow", "up", "--lake-root", root, "--port", str(port)])
        out = capsys.readouterr().out
        home = airflow_local.airflow_home(root)
        if code != 0:
            pytest.fail(f"up on PostgreSQL exited {code}\n{_log_tails(home)}", pytrace=False)
        assert f"database:   {postgres_url.split('@')[0]}@" in out  # the URL, password-free
        assert not Path(home, "airflow.db").exists()
        assert airflow_local.is_healthy(airflow_local.health(f"http://127.0.0.1:{port}"))
    finally:
        assert main(["airflow", "down", "--lake-root", root]) == 0
    assert not run_files.running_components(airflow_local.airflow_home(root))
