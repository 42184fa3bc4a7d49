"""``lake registry import FILE.csv``: load a real fleet's list into ``dims/vehicles``."""

from __future__ import annotations

from lake_core.registry import import_registry_csv, registry_path


def register(sub, common) -> None:
    p = sub.add_parser(
        "registry",
        parents=[common],
        help="manage the vehicle registry (dims/vehicles)",
        description="Load a fleet list into the vehicle registry. The CSV needs the columns "
        "vehicle_id,vehicle_type; a bad row fails the whole import, naming its line.",
    )
    p.add_argument("action", choices=["import"], help="import: upsert the vehicles of FILE")
    p.add_argument("file", help="CSV file with the columns vehicle_id,vehicle_type")
    p.set_defaults(func=run)


def run(args, settings) -> int:
    result = import_registry_csv(settings.lake_root, args.file)
    print(f"imported {args.file} into {registry_path(settings.lake_root)}: {result}")
    return 0
