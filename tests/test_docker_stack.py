"""The production-shaped stack in docker/: the file parses, agrees with the code, holds no secret.

No Docker engine is needed or used. The compose client (docker-compose 1.29
or the `docker compose` plugin) parses the file offline; everything else
reads docker/compose.yaml and docker/Dockerfile and checks them against the
code they run: the topic names and partitions of lake_schemas, the flags of
the real `lake ingest` parser and Beam's own option parser, the installed
Beam version, the DAG folder. The ingest supervisor runs against a fake
Flink REST API, and the lake's storage code against a loopback S3 endpoint
configured by the stack's own environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from lake_schemas import DEFAULT_PARTITIONS, DLQ_TOPIC, TELEMETRY_TOPIC

pytestmark = pytest.mark.compose

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"
SUPERVISOR = DOCKER / "ingest_supervisor.py"

# -- reading the compose file as Compose does ------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET")


def required_variables() -> list:
    """Variables the compose file refuses to run without (``${NAME:?message}``)."""
    return sorted(set(re.findall(r"\$\{(\w+):?\?", COMPOSE.read_text())))


#: What a user's docker/.env provides: a value for every required variable, nothing else.
TEST_ENV = {name: f"test-only-{name.lower().replace('_', '-')}" for name in required_variables()}


def interpolate(value, env: dict):
    """Compose's variable substitution (``$$``, ``${X}``, ``${X:-d}``, ``${X-d}``, ``${X:?e}``, ``${X?e}``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg, present = m.group("op"), m.group("arg"), env.get(name)
        unset = present is None or (present == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else present
        if op in (":?", "?"):
            if unset:
                raise KeyError(f"{name}: {arg}")
            return present
        return present or ""

    return _VAR.sub(one, value)


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the <<: merge keys


def services(env: dict = TEST_ENV) -> dict:
    return interpolate(raw_compose()["services"], env)


def environment(service: dict) -> dict:
    return {k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}


def lake_services(svcs: dict) -> dict:
    """The services that run the lake image."""
    return {name: s for name, s in svcs.items() if "build" in s}


def default_services(svcs: dict) -> dict:
    return {name: s for name, s in svcs.items() if not s.get("profiles")}


def command(service: dict) -> list:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def host_port(address: str) -> tuple:
    host, _, port = address.rpartition(":")
    return host, int(port)


# -- the compose client -------------------------------------------------------------------------


def _clients() -> list:
    found = []
    if shutil.which("docker-compose"):
        found.append(("docker-compose",))
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode == 0
    ):
        found.append(("docker", "compose"))
    return found


CLIENTS = _clients()
CLIENT_PARAMS = [pytest.param(c, id=" ".join(c)) for c in CLIENTS] or [
    pytest.param(
        None,
        marks=pytest.mark.skip(
            reason="no compose client: neither docker-compose nor the docker "
            "compose plugin is installed (scripts/system-deps installs "
            "Debian's docker-compose)"
        ),
    )
]


def run_config(client, env: dict, tmp_path: Path, *extra) -> subprocess.CompletedProcess:
    empty = tmp_path / "empty.env"  # a developer's docker/.env must not decide the outcome
    empty.write_text("")
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [*client, "--env-file", str(empty), "-f", str(COMPOSE), "config", *extra],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("client", CLIENT_PARAMS)
def test_compose_client_accepts_the_file(client, tmp_path):
    done = run_config(client, TEST_ENV, tmp_path, "-q")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("client", CLIENT_PARAMS)
def test_compose_client_refuses_to_run_without_a_secret(client, tmp_path):
    env = dict(TEST_ENV)
    del env["AIRFLOW_ADMIN_PASSWORD"]
    done = run_config(client, env, tmp_path, "-q")
    assert done.returncode != 0
    assert "AIRFLOW_ADMIN_PASSWORD" in done.stderr and "docker/.env" in done.stderr


@pytest.mark.parametrize("client", CLIENT_PARAMS)
def test_these_tests_resolve_the_file_as_the_client_does(client, tmp_path):
    """The structural tests below read the file themselves; the real client must agree with them."""
    done = run_config(client, TEST_ENV, tmp_path)
    assert done.returncode == 0, done.stderr
    # The client prints a compose file again, so it escapes each literal $ as $$; undo that.
    theirs = interpolate(yaml.safe_load(done.stdout)["services"], {})
    ours = services()
    assert set(theirs) == set(ours)
    for name, svc in ours.items():
        assert environment(theirs[name]) == environment(svc), name
        assert command(theirs[name]) == command(svc), name
        assert theirs[name].get("image") == svc.get("image"), name


# -- images --------------------------------------------------------------------------------------


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    # a version (3.9.2, 17.6) or a dated release (RELEASE.2025-09-07T16-13-09Z), never a moving alias
    return bool(name) and "/" not in tag and tag != "latest" and re.search(r"\d+\.\d+|\d{4}-\d\d-\d\d", tag) is not None


def test_every_image_is_pinned_to_a_version():
    for name, svc in services().items():
        assert "image" in svc, f"{name}: no image (an untagged build would be called <project>-{name})"
        assert _pinned(svc["image"]), f"{name}: {svc['image']} is not pinned to a version"
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert bases, "the Dockerfile has no FROM"
    for base in bases:
        assert re.search(r":\d+\.\d+\.\d+", base) or "@sha256:" in base, f"base image {base} is not pinned"
    assert any(b.startswith("python:3.11") for b in bases), "the lake runs on Python 3.11 (setup.py, the venv)"


def test_beam_job_server_matches_the_installed_beam_and_the_flink_cluster():
    import apache_beam
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    svcs = services()
    match = re.fullmatch(
        r"apache/beam_flink(?P<flink>[\d.]+)_job_server:(?P<beam>.+)", svcs["beam-job-server"]["image"]
    )
    assert match, svcs["beam-job-server"]["image"]
    assert match["beam"] == apache_beam.__version__, "the job server must run the Beam version the SDK workers run"
    assert match["flink"] in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert svcs[name]["image"].startswith(f"flink:{match['flink']}."), f"{name} must run Flink {match['flink']}"


def test_one_lake_image_for_every_python_part():
    lake = lake_services(services())
    assert {
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-init",
        "beam-worker-pool",
        "ingest",
        "simulator",
        "lake",
    } <= set(lake)
    assert len({s["image"] for s in lake.values()}) == 1
    for name, svc in lake.items():
        assert (COMPOSE.parent / svc["build"]["context"]).resolve() == REPO, name
        assert (REPO / svc["build"]["dockerfile"]).resolve() == DOCKERFILE, name


# -- start-up order -------------------------------------------------------------------------------


def _depends_on(svc: dict) -> dict:
    deps = svc.get("depends_on") or {}
    return {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps


def test_dependencies_exist_are_waited_for_properly_and_have_no_cycle():
    svcs = services()
    defaults = default_services(svcs)
    for name, svc in svcs.items():
        for dep, spec in _depends_on(svc).items():
            assert dep in svcs, f"{name} depends on {dep}, which is not a service"
            assert dep != name
            if name in defaults:
                assert dep in defaults, f"{name} starts by default but depends on {dep}, which is in a profile"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in svcs[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert svcs[dep].get("restart") in ("no", None), f"{dep} is waited for to exit but restarts"
            else:
                pytest.fail(f"{name} -> {dep}: use service_healthy or service_completed_successfully, not {condition}")
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            target = mode.split(":", 1)[1]
            assert target in svcs and target in _depends_on(svc), (
                f"{name} joins {target}'s network: it must wait for it"
            )
    order, visiting = [], set()

    def visit(name):
        assert name not in visiting, f"dependency cycle through {name}"
        if name in order:
            return
        visiting.add(name)
        for dep in _depends_on(svcs[name]):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in svcs:
        visit(name)
    assert order.index("kafka-init") < order.index("ingest")
    assert order.index("airflow-init") < order.index("airflow-scheduler")


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart():
    for name, svc in default_services(services()).items():
        one_shot = name.endswith("-init")
        if one_shot:
            assert svc.get("restart") == "no", name
        else:
            # the ingest and the stream run as Flink jobs through the supervisor, which exits with its job
            assert "healthcheck" in svc or name in ("ingest", "stream"), f"{name} has no healthcheck"
            assert svc.get("restart") == "unless-stopped", f"{name} does not come back after a crash or a reboot"


def test_volumes_are_declared_and_bind_mounts_exist():
    compose = raw_compose()
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services().items():
        for spec in svc.get("volumes") or []:
            source, target = spec.split(":")[:2]
            if source.startswith((".", "/")):
                path = (COMPOSE.parent / source).resolve()
                if path != REPO / "dags":  # dags/ may not exist yet; Docker would mount it empty
                    assert path.exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses volume {source}, not declared at the top level"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


# -- the lake's configuration ---------------------------------------------------------------------


def test_lake_services_agree_on_the_lake_root_kafka_and_s3():
    from lake_core.settings import Settings

    svcs = services()
    lake = lake_services(svcs)
    envs = {name: environment(s) for name, s in lake.items()}
    keys = (
        "LAKE_ROOT",
        "KAFKA_BOOTSTRAP_SERVERS",
        "LAKE_TOPIC",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ALLOW_HTTP",
        "AWS_CONDITIONAL_PUT",
    )
    for key in keys:
        values = {name: env.get(key) for name, env in envs.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), f"{key} differs: {values}"
    env = next(iter(envs.values()))

    minio_init = environment(svcs["minio-init"])
    assert env["LAKE_ROOT"] == f"s3://{minio_init['LAKE_BUCKET']}", (
        "the lake must live in the bucket minio-init creates"
    )
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio_init["LAKE_S3_ACCESS_KEY"],
        minio_init["LAKE_S3_SECRET_KEY"],
    ), "the lake must use the user minio-init creates"
    endpoint = urllib.parse.urlsplit(env["AWS_ENDPOINT_URL"])
    assert endpoint.scheme == "http" and env["AWS_ALLOW_HTTP"] == "true", (
        "delta-rs refuses http:// without AWS_ALLOW_HTTP"
    )
    assert endpoint.hostname == "minio" and endpoint.port == 9000 and "server" in command(svcs["minio"])
    assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in env, "unsafe renames let concurrent Delta commits overwrite each other"

    host, port = host_port(env["KAFKA_BOOTSTRAP_SERVERS"])
    assert f"PLAINTEXT://{host}:{port}" in environment(svcs[host])["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["LAKE_TOPIC"] == TELEMETRY_TOPIC
    settings = Settings.resolve(lake_root=env["LAKE_ROOT"], bootstrap=env["KAFKA_BOOTSTRAP_SERVERS"])
    assert settings.lake_root == env["LAKE_ROOT"] and settings.dlq_topic == DLQ_TOPIC


def test_kafka_init_creates_the_contract_topics():
    svcs = services()
    script = "\n".join(command(svcs["kafka-init"]))
    created = {}
    for line in script.splitlines():
        args = shlex.split(line)
        if "--create" not in args:
            continue
        opts = dict(zip(args, args[1:]))
        created[opts["--topic"]] = int(opts["--partitions"])
        assert opts["--bootstrap-server"] == environment(svcs["ingest"])["KAFKA_BOOTSTRAP_SERVERS"]
    assert created == {TELEMETRY_TOPIC: DEFAULT_PARTITIONS, DLQ_TOPIC: DEFAULT_PARTITIONS}
    assert environment(svcs["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_airflow_reads_the_repository_dags_and_shares_its_secrets():
    from lake.local.airflow import env as airflow_env

    svcs = services()
    airflow = {n: s for n, s in svcs.items() if n.startswith("airflow-")}
    assert set(airflow) == {
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    workdir = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)[-1]
    # The image installs the repository editable at WORKDIR, so airflow_env.DAGS_FOLDER
    # (<repo>/dags) is WORKDIR/dags inside it: the same folder the local tools use.
    assert Path(airflow_env.DAGS_FOLDER) == REPO / "dags"
    for name, svc in airflow.items():
        env = environment(svc)
        folder = env["AIRFLOW__CORE__DAGS_FOLDER"]
        assert folder == f"{workdir}/dags", name
        mounts = {spec.split(":")[1]: spec.split(":")[0] for spec in svc["volumes"]}
        assert (COMPOSE.parent / mounts[folder]).resolve() == REPO / "dags", f"{name} must mount the repo's dags/"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    shared = (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        "LAKE_ROOT",
    )
    for key in shared:
        assert len({environment(s)[key] for s in airflow.values()}) == 1, f"Airflow components disagree on {key}"
    api_url = urllib.parse.urlsplit(environment(svcs["airflow-scheduler"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api_url.hostname == "airflow-api-server" and "8080" in command(svcs["airflow-api-server"])
    # Only the one-shot init sees the admin password; it writes the file the api-server reads.
    assert [n for n, s in svcs.items() if "AIRFLOW_ADMIN_PASSWORD" in environment(s)] == ["airflow-init"]


# -- secrets ---------------------------------------------------------------------------------------


def test_no_secret_literal_in_the_compose_file():
    for name, svc in raw_compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if _SECRET_NAME.search(key) and not key.endswith("_FILE"):
                m = re.fullmatch(r"\$\{(\w+)(\??|:\?[^}]*)\}", str(value))
                assert m, f"{name}: {key} must come from a required variable, not {value!r}"
                assert _SECRET_NAME.search(m.group(1)), f"{name}: {key} takes {m.group(1)}, not a secret's name"
    text = COMPOSE.read_text()
    for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", text):
        assert password.startswith("${") and ":?" in password, f"credentials in a URL: {user}:{password}"
    for name, _default in re.findall(r"\$\{(\w+)(:?-)", text):
        assert not _SECRET_NAME.search(name), f"{name} has a default: a secret must have none"


def test_env_example_lists_every_required_variable_with_no_value():
    lines = [ln.strip() for ln in ENV_EXAMPLE.read_text().splitlines()]
    given = dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))
    assert set(required_variables()) <= set(given), "docker/.env.example must name every required variable"
    for name in required_variables():
        assert given[name] == "", f"{name} has a value in .env.example; a copied example must not start a stack"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
    assert "docker/.env" in (REPO / ".dockerignore").read_text().split()


# -- the image ------------------------------------------------------------------------------------


def _run_lines(dockerfile: str) -> list:
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [ln.strip()[4:] for ln in joined.splitlines() if ln.strip().startswith("RUN ")]


def _setup_extras() -> dict:
    """``extras_require`` as setup.py writes it (installed metadata may predate the file)."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    lists = {}  # the module's literal lists (AIRFLOW_REQUIRES = [...]), which extras_require combines
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                lists[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return eval(compile(ast.Expression(node.value), "setup.py", "eval"), {"__builtins__": {}}, lists)
    raise AssertionError("setup.py has no extras_require")


def test_dockerfile_installs_the_lake_with_its_constraints():
    text = DOCKERFILE.read_text()
    installs = [part.strip() for line in _run_lines(text) for part in line.split("&&") if "pip install" in part]
    assert installs, "the Dockerfile installs nothing"
    for install in installs:
        args = shlex.split(install)
        assert "--no-deps" in args or ("-c" in args and args[args.index("-c") + 1] == "constraints.txt"), (
            f"resolves dependencies without constraints.txt: {install}"
        )
    extras = set()
    for install in installs:
        extras |= {e for m in re.finditer(r"\.\[([\w,]+)\]", install) for e in m.group(1).split(",")}
    assert "airflow" in extras, "the image serves Airflow: it needs the airflow extra"
    declared = _setup_extras()
    for extra in extras:
        assert extra in declared, f"setup.py has no extra {extra!r}"
    # The metadata database is PostgreSQL: its driver must come with what the image installs.
    conn = services()["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    module = conn.split("://")[0].split("+")[1]
    assert any(req.startswith(module) for e in extras for req in declared[e]), f"no {module} in {sorted(extras)}"
    copy_constraints = text.index("constraints.txt")
    assert copy_constraints < text.index("pip install"), "constraints.txt must be in the image before pip runs"


def test_worker_pool_runs_beams_worker_pool_on_the_port_ingest_uses():
    svcs = services()
    pool = command(svcs["beam-worker-pool"])
    assert pool[:3] == ["python", "-m", "apache_beam.runners.worker.worker_pool_main"]
    assert importlib.util.find_spec("apache_beam.runners.worker.worker_pool_main") is not None
    assert "--service_port=50000" in pool
    assert svcs["beam-worker-pool"]["network_mode"] == "service:flink-taskmanager"


# -- the ingest and the other lake commands, through the real parsers ---------------------------


def _load_supervisor():
    spec = importlib.util.spec_from_file_location("ingest_supervisor", SUPERVISOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ingest_command_is_accepted_by_lake_ingest_and_beam():
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions

    from beam_pipelines.ingest.options import options_from_args
    from beam_pipelines.ingest.pipeline import beam_options
    from lake.cli import build_parser
    from lake_core.settings import Settings

    svcs = services()
    argv = command(svcs["ingest"])
    workdir = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)[-1]
    assert argv[:2] == ["python", f"{workdir}/{SUPERVISOR.relative_to(REPO)}"], "the image has the repo at WORKDIR"
    wrapper, lake_argv = argv[2 : argv.index("--")], argv[argv.index("--") + 1 :]
    assert lake_argv[:2] == ["lake", "ingest"]

    args, beam_args = build_parser().parse_known_args(lake_argv[1:])
    assert args.command == "ingest" and args.allow_beam_args
    assert args.follow and args.until_idle is None and args.kafka_source == "native"
    env = environment(svcs["ingest"])
    settings = Settings.resolve(lake_root=env["LAKE_ROOT"], bootstrap=env["KAFKA_BOOTSTRAP_SERVERS"])
    opts = options_from_args(args, settings)
    opts.validate()
    assert not opts.local, "the stack's ingest must run on Flink, not on the local runner"
    pipeline_options = beam_options(opts, beam_args)  # refuses unknown or malformed Beam options
    portable = pipeline_options.view_as(PortableOptions)
    assert pipeline_options.view_as(StandardOptions).streaming

    # Every address in the command names a service of the stack, on the port it serves.
    job_host, job_port = host_port(portable.job_endpoint)
    artifact_host, artifact_port = host_port(portable.artifact_endpoint)
    assert job_host == artifact_host == "beam-job-server" and (job_port, artifact_port) == (8099, 8098)
    assert f"/dev/tcp/127.0.0.1/{job_port}" in " ".join(svcs["beam-job-server"]["healthcheck"]["test"])
    assert portable.environment_type == "EXTERNAL"
    pool_host, pool_port = host_port(portable.environment_config)
    assert pool_host == "localhost", "the task manager reaches the worker pool in its own network namespace"
    assert f"--service_port={pool_port}" in command(svcs["beam-worker-pool"])
    rest = urllib.parse.urlsplit(dict(a.split("=", 1) for a in wrapper)["--flink-rest"])
    assert rest.hostname == "flink-jobmanager" and rest.port == 8081
    assert "--flink-master=flink-jobmanager:8081" in command(svcs["beam-job-server"])
    assert _load_supervisor().job_name_of(lake_argv) == "lake-ingest"


def test_simulator_and_tools_commands_are_real_lake_commands():
    from lake.cli import build_parser

    svcs = services()
    sim = command(svcs["simulator"])
    assert sim[0] == "lake" and svcs["simulator"]["profiles"] == ["demo"]
    args = build_parser().parse_args(sim[1:])
    assert args.command == "simulate" and args.sink == "kafka"
    assert svcs["lake"]["entrypoint"] == ["lake"] and svcs["lake"]["profiles"] == ["tools"]


def test_mqtt_edge_runs_the_lakes_own_mosquitto_and_bridge_with_a_shared_secret():
    """No hand-written Mosquitto configuration (no allow_anonymous): the lake generates it from the device store."""
    from lake.cli import build_parser

    svcs = services()
    mqtt = build_parser().parse_args(command(svcs["mosquitto"])[1:])
    assert (mqtt.command, mqtt.action, mqtt.host, mqtt.port) == ("mqtt", "run", "0.0.0.0", 1883)
    bridge = build_parser().parse_args(command(svcs["mqtt-bridge"])[1:])
    assert (bridge.command, bridge.mqtt_host, bridge.mqtt_port) == ("bridge", "mosquitto", 1883)
    assert bridge.health_file and bridge.health_file in " ".join(svcs["mqtt-bridge"]["healthcheck"]["test"])
    for name in ("mosquitto", "mqtt-bridge"):
        assert svcs[name]["environment"]["LAKE_MQTT_BRIDGE_SECRET"], name
    assert "mosquitto" in (REPO / "docker" / "Dockerfile").read_text()
    assert not (REPO / "docker" / "mosquitto").exists()


# -- the ingest supervisor, against a fake Flink REST API -----------------------------------------


class FakeFlink:
    """Flink's ``/overview``, ``/jobs/overview`` and ``PATCH /jobs/<id>?mode=cancel``; plus
    ``POST /test/submit?name=`` so a stand-in driver can start a job as the real one would."""

    def __init__(self, jobs):
        self.jobs = {j["jid"]: dict(j) for j in jobs}
        self.cancelled = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/overview":
                    return self._json(200, {"taskmanagers": 1})
                if self.path == "/jobs/overview":
                    return self._json(200, {"jobs": list(fake.jobs.values())})
                self._json(404, {"errors": ["not found"]})

            def do_PATCH(self):
                url = urllib.parse.urlsplit(self.path)
                jid = url.path.rsplit("/", 1)[1]
                assert url.query == "mode=cancel"
                fake.cancelled.append(jid)
                fake.jobs[jid]["state"] = "CANCELED"
                self._json(202, {})

            def do_POST(self):
                name = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["name"][0]
                jid = f"job{len(fake.jobs)}"
                fake.jobs[jid] = {"jid": jid, "name": name, "state": "RUNNING"}
                self._json(200, {"jid": jid})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flink():
    fake = FakeFlink(
        [
            {"jid": "stale", "name": "lake-ingest", "state": "RUNNING"},
            {"jid": "finished", "name": "lake-ingest", "state": "FINISHED"},
            {"jid": "other", "name": "someone-else", "state": "RUNNING"},
        ]
    )
    yield fake
    fake.close()


# A stand-in for `lake ingest` on Flink: submits a job, then runs until that job is cancelled
# and fails, as the PortableRunner's wait_until_finish does.
_DRIVER = """
import json, sys, time, urllib.request
rest = sys.argv[1]
submit = urllib.request.Request(rest + "/test/submit?name=lake-ingest", method="POST")
jid = json.load(urllib.request.urlopen(submit))["jid"]
print(jid, flush=True)
while True:
    jobs = json.load(urllib.request.urlopen(rest + "/jobs/overview"))["jobs"]
    if next(j for j in jobs if j["jid"] == jid)["state"] == "CANCELED":
        sys.exit(1)
    time.sleep(0.1)
"""


def _supervise(flink, *child, stop_timeout=10):
    return subprocess.Popen(
        [sys.executable, str(SUPERVISOR), f"--flink-rest={flink.url}", f"--stop-timeout={stop_timeout}", "--", *child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_supervisor_replaces_a_stale_job_and_cancels_its_own_on_sigterm(flink):
    proc = _supervise(flink, sys.executable, "-c", _DRIVER, flink.url, "--job_name=lake-ingest")
    try:
        new_job = proc.stdout.readline().strip()  # the driver has submitted
        assert new_job and flink.jobs[new_job]["state"] == "RUNNING"
        assert flink.cancelled == ["stale"], "the earlier driver's job must be gone before a new one is submitted"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert code == 0, proc.stderr.read()
    assert flink.cancelled == ["stale", new_job]
    assert flink.jobs["other"]["state"] == "RUNNING" and flink.jobs["finished"]["state"] == "FINISHED"


def test_supervisor_passes_on_the_drivers_exit_code(flink):
    proc = _supervise(flink, sys.executable, "-c", "import sys; sys.exit(3)", "--job_name=lake-ingest")
    assert proc.wait(timeout=30) == 3


def test_supervisor_kills_a_driver_that_ignores_the_stop(flink):
    proc = _supervise(
        flink,
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)",
        "--job_name=lake-ingest",
        stop_timeout=1,
    )
    try:
        assert proc.stdout.readline().strip() == "up"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
    finally:
        proc.kill()


def test_supervisor_refuses_a_command_without_a_job_name(flink):
    proc = _supervise(flink, "lake", "ingest", "--runner=PortableRunner")
    assert proc.wait(timeout=30) == 2
    assert "--job_name" in proc.stderr.read()
    assert flink.cancelled == []


def test_supervisor_reads_job_names_and_live_jobs():
    sup = _load_supervisor()
    assert sup.job_name_of(["lake", "ingest", "--job_name", "a"]) == "a"
    assert sup.job_name_of(["lake", "--job_name=b"]) == "b"
    overview = {
        "jobs": [
            {"jid": "1", "name": "a", "state": "RESTARTING"},
            {"jid": "2", "name": "a", "state": "FAILED"},
            {"jid": "3", "name": "b", "state": "RUNNING"},
        ]
    }
    assert sup.live_jobs(overview, "a") == ["1"]


# -- the lake's storage on S3, configured only by the stack's environment --------------------------


@pytest.fixture
def stack_s3(monkeypatch):
    """A loopback S3 endpoint, with the process environment the lake services get in the stack."""
    from lake_core import storage
    from support.fake_s3 import FakeS3

    env = environment(services()["ingest"])
    with FakeS3() as s3:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)  # the one difference: minio:9000 is not here
        storage.filesystem.cache_clear()
        yield s3, env["LAKE_ROOT"]
        storage.filesystem.cache_clear()


def test_lake_storage_reads_and_writes_s3_from_the_stack_environment(stack_s3):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lake_core.registry import registry_path, upsert_vehicles
    from lake_core.storage import delta_dataset, filesystem, fs_path

    s3, root = stack_s3
    bucket = root.split("://", 1)[1]

    # Bronze's way: pyarrow's S3 filesystem, built from the lake root alone.
    fs, _ = filesystem(root)
    path = fs_path(root, f"{root}/bronze/probe.parquet")
    pq.write_table(pa.table({"n": [1, 2, 3]}), path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs)["n"].to_pylist() == [1, 2, 3]

    # Silver/Gold's way: delta-rs writes (a create, then a MERGE), read back through pyarrow.
    assert tuple(upsert_vehicles(root, ["V1", "V2"], ["scooter", "ebike"], registered_at_ms=0)) == (2, 0, 0)
    assert tuple(upsert_vehicles(root, ["V1", "V3"], ["car", "car"], registered_at_ms=0)) == (1, 1, 0)
    rows = delta_dataset(registry_path(root)).to_table().to_pylist()
    assert {r["vehicle_id"]: r["vehicle_type"] for r in rows} == {"V1": "car", "V2": "ebike", "V3": "car"}

    assert any(k.startswith("dims/vehicles/_delta_log/") for k in s3.keys(bucket))
    assert all(r.bucket == bucket for r in s3.requests), "path-style requests to the lake's bucket only"
    commits = [r for r in s3.requests if r.method == "PUT" and "/_delta_log/" in r.key and r.key.endswith(".json")]
    assert len(commits) == 2
    assert all(r.headers.get("if-none-match") == "*" for r in commits), (
        "Delta commits on the stack's S3 must be put-if-absent, or concurrent writers overwrite each other"
    )
