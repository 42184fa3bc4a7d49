"""``lake mqtt start|stop|status``: the project's Mosquitto, configured from the device store (contract 8)."""

from __future__ import annotations

from lake.edge import mosquitto
from lake_core.errors import ConfigError


def register(sub, common) -> None:
    p = sub.add_parser(
        "mqtt",
        parents=[common],
        help="run Mosquitto for the fleet: device passwords and per-device ACLs from `lake devices`",
        description="Run Debian's Mosquitto on its own port (default 1884; the machine's own broker on 1883 is "
        "left alone) with a configuration generated from the device store: no anonymous access, each device "
        "publishes only to telemetry/<its vehicle id>, the bridge's account reads telemetry/#.",
    )
    p.add_argument(
        "action",
        choices=["start", "stop", "status", "run"],
        help="start (in the background), stop, status, or run: in the foreground until SIGTERM, reloading "
        "when the device store changes (for containers and service managers, and devices added elsewhere)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=mosquitto.DEFAULT_PORT, help="MQTT port (default 1884)")
    p.add_argument("--tls", action="store_true", help="also listen with TLS, with a CA this command generates")
    p.add_argument("--tls-port", type=int, help="the TLS listener's port (default: --port + 1)")
    p.add_argument(
        "--watch-every",
        type=float,
        default=5.0,
        help="run: how often the device store is read for changes, in seconds (default 5; a revocation "
        "counts within that plus Mosquitto's reload)",
    )
    p.set_defaults(func=run)


def _started(info) -> None:
    print(f"mqtt://{info.address} (pid {info.pid}, log {info.log})", flush=True)


def run(args, settings) -> int:
    if args.action == "run":
        if args.watch_every <= 0:
            raise ConfigError("--watch-every must be positive")
        return mosquitto.run_foreground(
            settings, args.host, args.port, args.tls, args.tls_port, args.watch_every, on_start=_started
        )
    if args.action == "start":
        info = mosquitto.start_mosquitto(settings, args.host, args.port, args.tls, args.tls_port)
        print(f"mqtt://{info.address}")
        if info.tls_port is not None:
            print(f"mqtts://{info.host}:{info.tls_port} (clients verify it with --cafile {info.ca})")
        return 0
    if args.action == "stop":
        info = mosquitto.stop_mosquitto(settings)
        print(f"stopped Mosquitto pid {info.pid}" if info else "this lake's Mosquitto is not running")
        return 0
    info = mosquitto.running_mosquitto(settings)
    if info is None:
        print("mosquitto: not running")
        return 1
    tls = f", TLS port {info.tls_port} (CA {info.ca})" if info.tls_port is not None else ""
    print(
        f"mosquitto: running, pid {info.pid}, port {info.port} on {info.host}{tls}, "
        f"{mosquitto.active_devices(settings):,} active device(s), log {info.log}"
    )
    return 0
