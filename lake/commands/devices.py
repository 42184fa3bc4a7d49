"""``lake devices add|revoke|list``: device credentials (contract section 8).

``add`` registers the vehicle (``dims/vehicles``) and prints its secret once;
the lake keeps only salted slow hashes (``lake_core.devices``).
"""

from __future__ import annotations

import datetime as _dt
import json

from lake.edge.reload import after_credentials_change
from lake_core.devices import DeviceStore
from lake_core.registry import upsert_vehicles


def register(sub, common) -> None:
    p = sub.add_parser(
        "devices",
        parents=[common],
        help="device credentials: add, revoke, list",
        description="Give vehicles secrets to prove who they are at the MQTT and HTTP edges. "
        "A secret is printed once and stored only as salted slow hashes; a revoked device is refused "
        "at every edge within 10 seconds.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="register vehicles and print their new secrets")
    add.add_argument("vehicle_ids", nargs="+", metavar="VEHICLE_ID")
    add.add_argument("--type", dest="vehicle_type", default="scooter", help="vehicle type (default scooter)")
    add.add_argument("--rotate", action="store_true", help="replace an existing secret (the old one stops working)")
    add.add_argument("--format", choices=["text", "json"], default="text", help="text: 'VEHICLE SECRET' lines")
    revoke = actions.add_parser("revoke", parents=[common], help="refuse a device at every edge")
    revoke.add_argument("vehicle_ids", nargs="+", metavar="VEHICLE_ID")
    listing = actions.add_parser("list", parents=[common], help="devices and their state (never secrets)")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
    for action in (add, revoke, listing):
        action.set_defaults(func=run)


def _when(ms) -> str:
    if ms is None:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="seconds")


def run(args, settings) -> int:
    store = DeviceStore(settings.lake_root)
    if args.action == "add":
        secrets = store.add_many([(v, args.vehicle_type) for v in args.vehicle_ids], rotate=args.rotate)
        upsert_vehicles(settings.lake_root, list(secrets), [args.vehicle_type] * len(secrets))
        after_credentials_change(settings)
        if args.format == "json":
            print(json.dumps(secrets, indent=1))
        else:
            for vid, secret in secrets.items():
                print(f"{vid} {secret}")
        return 0
    if args.action == "revoke":
        for vid in args.vehicle_ids:
            device = store.revoke(vid)
            print(f"revoked {vid} at {_when(device.revoked_at_ms)}")
        after_credentials_change(settings)
        return 0
    devices = sorted(store.load().values(), key=lambda d: d.vehicle_id)
    if args.format == "json":
        rows = [
            {
                "vehicle_id": d.vehicle_id,
                "vehicle_type": d.vehicle_type,
                "added_at": _when(d.added_at_ms),
                "revoked_at": None if d.active else _when(d.revoked_at_ms),
                "state": "active" if d.active else "revoked",
            }
            for d in devices
        ]
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'VEHICLE':<20} {'TYPE':<10} {'STATE':<8} {'ADDED':<26} REVOKED")
    for d in devices:
        state = "active" if d.active else "revoked"
        print(f"{d.vehicle_id:<20} {d.vehicle_type:<10} {state:<8} {_when(d.added_at_ms):<26} {_when(d.revoked_at_ms)}")
    print(f"{len(devices):,} device(s), {sum(d.active for d in devices):,} active")
    return 0
