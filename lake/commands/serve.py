"""``lake serve``: the read API over the hot store and the lake, with the fleet dashboard (``lake.read_api``)."""

from __future__ import annotations

from lake.read_api.app import ReadApiOptions, serve
from lake_core.services import announced
from lake_core.settings import env
from lake_schemas.hot import DEFAULT_HOT_DSN, DEFAULT_RULES


def register(sub, common) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="the read API (vehicles, telemetry, alerts, zones, stats), /metrics and the fleet dashboard at /",
        description="Serves GET /v1/vehicles, /v1/vehicles/{id}, /v1/vehicles/{id}/telemetry, /v1/alerts, "
        "/v1/zones/activity, /v1/stats (JSON; /openapi.json), /metrics (Prometheus: requests and the lake's "
        "freshness) and the dashboard at /. Reads the hot store (LAKE_HOT_DSN) and the lake (--lake-root). "
        "Outside loopback every request needs a key from LAKE_API_KEYS.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; others need LAKE_API_KEYS)")
    p.add_argument("--port", type=int, default=8001, help="TCP port (default 8001)")
    p.add_argument(
        "--hot-days",
        type=float,
        default=float(DEFAULT_RULES.hot_days),
        help=f"the hot store's horizon: older telemetry comes from Silver (default {DEFAULT_RULES.hot_days})",
    )
    p.add_argument(
        "--geofence",
        help="GeoJSON file of the operating areas the map draws "
        "(default: env LAKE_GEOFENCE, else the simulator's city)",
    )
    p.add_argument(
        "--no-kafka", action="store_true", help="do not ask the broker for its newest record (freshness without it)"
    )
    p.set_defaults(func=run)


def run(args, settings) -> int:
    keys = tuple(k.strip() for k in (env("LAKE_API_KEYS") or "").split(",") if k.strip())
    url = f"http://{args.host}:{args.port}"
    with announced(settings.lake_root, "serve", f"{url}/ (dashboard, /v1)", f"{url}/metrics"):
        serve(
            ReadApiOptions(
                lake_root=settings.lake_root,
                hot_dsn=env("LAKE_HOT_DSN") or DEFAULT_HOT_DSN,
                host=args.host,
                port=args.port,
                hot_days=args.hot_days,
                api_keys=keys,
                kafka=None if args.no_kafka else (settings.bootstrap, settings.topic),
                geofence_path=args.geofence or env("LAKE_GEOFENCE"),
            ),
            verbose=args.verbose,
        )
    return 0
