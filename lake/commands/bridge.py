"""``lake bridge mqtt``: Mosquitto's ``telemetry/+`` into the telemetry topic, acknowledged after Kafka (contract 8)."""

from __future__ import annotations

import logging
from pathlib import Path

from lake.edge import mosquitto
from lake.edge.bridge import BridgeOptions, run_bridge
from lake_core.errors import ConfigError
from lake_core.services import announced


def register(sub, common) -> None:
    p = sub.add_parser(
        "bridge",
        parents=[common],
        help="bridge MQTT to Kafka (QoS 1, acknowledged only after Kafka's delivery report)",
        description="Subscribe to telemetry/+ at QoS 1 in a persistent session and produce every message to the "
        "telemetry topic, keyed by the topic's vehicle id; a payload naming another vehicle goes to the DLQ "
        "(vehicle_mismatch). SIGTERM or Ctrl-C stops it gracefully; a killed bridge loses nothing.",
    )
    kinds = p.add_subparsers(dest="kind", required=True)
    m = kinds.add_parser("mqtt", parents=[common], help="from the lake's Mosquitto (`lake mqtt start`)")
    m.add_argument("--mqtt-host", default=None, help="Mosquitto's host (default: the one `lake mqtt start` runs)")
    m.add_argument("--mqtt-port", type=int, default=None, help="its port (default: that of `lake mqtt start`, 1884)")
    m.add_argument("--cafile", help="connect with TLS, verifying Mosquitto with this CA (`lake mqtt start --tls`)")
    m.add_argument("--client-id", default="lake-bridge", help="MQTT client id: names the persistent session")
    m.add_argument("--shared", metavar="GROUP", help="subscribe $share/GROUP/telemetry/+: bridges of a group share")
    m.add_argument(
        "--mqtt-password-file",
        help="the bridge account's password (default: bridge.secret beside the lake's Mosquitto config)",
    )
    m.add_argument("--receive-maximum", type=int, default=5000, help="unacknowledged messages in flight (5000)")
    m.add_argument("--session-expiry", type=int, default=7 * 24 * 3600, help="seconds Mosquitto keeps the session")
    m.add_argument("--metrics-port", type=int, help="serve Prometheus metrics (messages, DLQ, in flight) on this port")
    m.add_argument("--metrics-host", default="127.0.0.1", help="interface of --metrics-port (default 127.0.0.1)")
    m.add_argument("--log-every", type=float, default=10.0, help="log the counters every N seconds (default 10)")
    m.add_argument(
        "--health-file",
        help="touch this file every 5 s while connected to Mosquitto (a healthcheck tests its age)",
    )
    m.set_defaults(func=run)
    p.set_defaults(func=run)


def run(args, settings) -> int:
    if args.log_every <= 0:
        raise ConfigError("--log-every must be positive")
    logging.getLogger("lake.bridge").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.mqtt_password_file:
        try:
            password = Path(args.mqtt_password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--mqtt-password-file: {exc}") from None
    else:
        password = mosquitto.bridge_secret(settings)
    running = mosquitto.running_mosquitto(settings)
    host = args.mqtt_host or (mosquitto.connect_host(running.host) if running else "127.0.0.1")
    port = args.mqtt_port or (running.port if running else mosquitto.DEFAULT_PORT)
    options = BridgeOptions(
        bootstrap=settings.bootstrap,
        topic=settings.topic,
        dlq_topic=settings.dlq_topic,
        password=password,
        mqtt_host=host,
        mqtt_port=port,
        username=mosquitto.BRIDGE_USER,
        client_id=args.client_id,
        shared=args.shared,
        cafile=args.cafile,
        receive_maximum=args.receive_maximum,
        session_expiry_s=args.session_expiry,
        log_every_s=args.log_every,
        health_file=args.health_file,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    metrics = f"http://{args.metrics_host}:{args.metrics_port}/metrics" if args.metrics_port else None
    detail = f"mqtt://{host}:{port} -> {settings.topic}" + (" (shared)" if args.shared else "")
    with announced(settings.lake_root, "bridge", detail, metrics):
        run_bridge(options)
    return 0
