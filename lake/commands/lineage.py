"""``lake lineage <gold table> --vehicle V --hour H | --zone Z --hour H | --vehicle V [--format table|json]``."""

from __future__ import annotations

import json

from lake.commands.query import format_table, json_value
from lake.lineage import GOLD_KEYS, gold_count, lineage


def register(sub, common) -> None:
    p = sub.add_parser(
        "lineage",
        parents=[common],
        help="the Silver rows and Kafka records behind a Gold row",
        description="Prints the Silver rows behind one Gold row and, for each, the Kafka topic, partition and "
        "offset and the Bronze file it came from. Keys: gold_vehicle_hourly --vehicle V --hour H; "
        "gold_zone_hourly --zone Z --hour H; gold_vehicle_state --vehicle V.",
    )
    p.add_argument("table", choices=sorted(GOLD_KEYS))
    p.add_argument("--vehicle")
    p.add_argument("--zone")
    p.add_argument("--hour", help="UTC hour of event time, e.g. 2026-03-01T08")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--max-rows", type=int, default=200, help="rows shown by --format table (default 200)")
    p.set_defaults(func=run)


def run(args, settings) -> int:
    rows = lineage(args.table, settings.lake_root, vehicle=args.vehicle, hour=args.hour, zone=args.zone)
    if args.format == "json":
        print(json.dumps(rows.to_pylist(), default=json_value))
        return 0
    if args.table == "gold_vehicle_state":
        print(f"{args.table} {args.vehicle}: its latest values come from {rows.num_rows} Silver row(s)")
    else:
        key = args.vehicle or args.zone
        count = gold_count(settings.lake_root, args.table, vehicle=args.vehicle, zone=args.zone, hour=args.hour)
        print(f"{args.table} {key} {args.hour}: event_count {count:,} <- {rows.num_rows:,} Silver row(s)")
    print(format_table(rows, args.max_rows))
    return 0
