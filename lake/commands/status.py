"""``lake status``: what runs, how far behind each layer is, what failed last (``lake.observability.status``)."""

from __future__ import annotations

import json

from lake.observability.status import lake_status, render
from lake_core.settings import env
from lake_schemas.hot import DEFAULT_HOT_DSN


def register(sub, common) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="what is running, how far behind the topic each layer is, and what failed last",
        description="Reads the lake (leases, pid files, _COMPLETE markers, run records, quality results), the "
        "broker (its newest record) and the hot store (LAKE_HOT_DSN); a source it cannot reach is named.",
    )
    p.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json for tools")
    p.add_argument("--kafka-timeout", type=float, default=3.0, help="seconds to wait for the broker (default 3)")
    p.set_defaults(func=run)


def run(args, settings) -> int:
    status = lake_status(settings, env("LAKE_HOT_DSN") or DEFAULT_HOT_DSN, kafka_timeout=args.kafka_timeout)
    if args.format == "json":
        print(json.dumps(status.as_dict(), indent=1, default=str))
    else:
        print(render(status))
    return 0
