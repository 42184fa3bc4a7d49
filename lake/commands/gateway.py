"""``lake gateway``: the HTTP edge of contract section 8 (``lake.edge.gateway``)."""

from __future__ import annotations

from lake.edge.gateway import GatewayOptions, serve
from lake.edge.gateway_auth import AuthLimits
from lake_core.errors import ConfigError
from lake_core.services import announced


def register(sub, common) -> None:
    p = sub.add_parser(
        "gateway",
        parents=[common],
        help="serve POST /v1/telemetry: devices send telemetry over HTTP with their bearer secret",
        description="Devices POST one message (application/json) or NDJSON (application/x-ndjson, at most 1,000 "
        "messages and 1 MiB) to /v1/telemetry with 'Authorization: Bearer <secret>' (`lake devices add`). "
        "202 once Kafka acknowledged every message; 400/401/403/413/415/429/503 otherwise. "
        "Also GET /healthz, /metrics (Prometheus) and /openapi.json. SIGTERM drains and flushes.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, each with its own producer (default 1)")
    p.add_argument("--rate", type=float, default=50.0, help="messages/s a device may send, sustained (default 50)")
    p.add_argument(
        "--burst", type=float, default=1000.0, help="messages a device may send at once (default 1000: a full batch)"
    )
    p.add_argument(
        "--produce-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for Kafka's acknowledgement before answering 503 (default 5)",
    )
    p.add_argument(
        "--auth-checks-per-s",
        type=float,
        default=AuthLimits.slow_checks_per_s,
        help=f"new secrets a worker checks (scrypt) per second at most (default {AuthLimits.slow_checks_per_s:g})",
    )
    p.add_argument(
        "--auth-refresh",
        type=float,
        default=AuthLimits.refresh_s,
        help=f"seconds between reads of the credentials file (default {AuthLimits.refresh_s:g}; at most 10)",
    )
    p.set_defaults(func=run)


def run(args, settings) -> int:
    if not 0.1 <= args.auth_refresh <= 10:
        raise ConfigError("--auth-refresh must be between 0.1 and 10 seconds (a revocation counts within 10 s)")
    if args.auth_checks_per_s <= 0:
        raise ConfigError("--auth-checks-per-s must be above 0")
    url = f"http://{args.host}:{args.port}"
    with announced(settings.lake_root, "gateway", f"{url}/v1/telemetry, {args.workers} worker(s)", f"{url}/metrics"):
        serve(
            GatewayOptions(
                lake_root=settings.lake_root,
                bootstrap=settings.bootstrap,
                topic=settings.topic,
                host=args.host,
                port=args.port,
                workers=args.workers,
                rate=args.rate,
                burst=args.burst,
                produce_timeout_s=args.produce_timeout,
                auth=AuthLimits(slow_checks_per_s=args.auth_checks_per_s, refresh_s=args.auth_refresh),
                verbose=args.verbose,
            )
        )
    return 0
