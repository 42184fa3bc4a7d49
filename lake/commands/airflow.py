"""``lake airflow up|down|status``: a local Airflow running the lake's DAGs.

Progress goes to stderr; ``up`` prints the URL and the login on stdout.
"""

from __future__ import annotations

import sys

from lake.local.airflow import stack
from lake_core.errors import ConfigError
from lake_core.settings import env


def register(sub, common) -> None:
    p = sub.add_parser(
        "airflow",
        parents=[common],
        help="run a local Airflow (api-server, scheduler, dag-processor, triggerer) for the DAGs",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--port", type=int, default=None, help="UI and API port (default: env LAKE_AIRFLOW_PORT, else 8080)")
    p.add_argument(
        "--host", default=None, help="interface the UI listens on (default: env LAKE_AIRFLOW_HOST, else 127.0.0.1)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds `up` waits for health, `down` for a clean exit (default 300 / 30)",
    )
    p.set_defaults(func=run)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _port(args) -> int:
    raw = args.port if args.port is not None else env("LAKE_AIRFLOW_PORT")
    if raw is None:
        return stack.DEFAULT_PORT
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"LAKE_AIRFLOW_PORT={raw!r} is not a port number") from None


def run(args, settings) -> int:
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    if args.action == "up":
        return _up(args, settings)
    if args.action == "down":
        stopped = stack.stop(settings.lake_root, timeout=args.timeout or stack.STOP_TIMEOUT_S)
        if not stopped:
            print("no local Airflow running")
        else:
            print("stopped " + ", ".join(f"{name} (pid {pid})" for name, pid in stopped.items()))
        return 0
    return _status(settings)


def _up(args, settings) -> int:
    host = args.host or env("LAKE_AIRFLOW_HOST") or stack.DEFAULT_HOST
    info = stack.start(
        settings.lake_root,
        port=_port(args),
        host=host,
        timeout=args.timeout or stack.START_TIMEOUT_S,
        progress=_progress,
    )
    if info.already_running:
        _progress("airflow: already running")
    print(f"Airflow UI: {info.url}")
    print(f"login:      {info.user} / {info.password}")
    print(f"home:       {info.home}")
    print(f"database:   {info.database}")
    print("stop with:  lake airflow down")
    return 0


def _status(settings) -> int:
    states, url, report = stack.status(settings.lake_root)
    running = [s for s in states if s.pid is not None]
    if not running:
        print("airflow: not running")
        return 1
    healthy = stack.is_healthy(report)
    print(f"airflow: {'running' if healthy else 'degraded'} at {url}")
    for state in states:
        if state.pid is None:
            print(f"  {state.name:<14} not running   log {state.log}")
            continue
        if state.name == "api-server":
            detail = "answering" if report is not None else "not answering"
        else:
            detail = (report or {}).get(state.name.replace("-", "_"), "unknown")
        print(f"  {state.name:<14} pid {state.pid:<8} {detail:<10} log {state.log}")
    return 0 if healthy and len(running) == len(states) else 1
