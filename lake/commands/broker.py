"""``lake broker start|stop|status``: the embedded Kafka-protocol broker."""

from __future__ import annotations

from lake.local import broker
from lake_core.errors import ConfigError
from lake_schemas import DEFAULT_PARTITIONS


def register(sub, common) -> None:
    p = sub.add_parser("broker", parents=[common], help="run the embedded Kafka-compatible broker (Tansu)")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, default=9092, help="listen on 127.0.0.1:PORT (default 9092)")
    p.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions of the topics it creates (default {DEFAULT_PARTITIONS})",
    )
    p.set_defaults(func=run)


def run(args, settings) -> int:
    if args.action == "start":
        if args.partitions < 1:
            raise ConfigError("--partitions must be at least 1")
        info = broker.start_broker(
            settings.lake_root, args.port, args.partitions, topics=[settings.topic, settings.dlq_topic]
        )
        print(info.bootstrap)
        return 0
    if args.action == "stop":
        info = broker.stop_broker(settings.lake_root)
        print(f"stopped broker pid {info.pid}" if info else "no embedded broker running")
        return 0
    info = broker.running_broker(settings.lake_root)
    if info is None:
        print("embedded broker: not running")
        return 1
    print(f"embedded broker: running, pid {info.pid}, bootstrap {info.bootstrap}, log {info.log}")
    return 0
