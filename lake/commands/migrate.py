"""``lake migrate [--dry-run] [--format text|json]``: bring the lake's Delta tables to this version's schemas.

A table an older version wrote lacks the columns added since (Silver's
lineage columns, for one); the jobs refuse it, naming the columns, until it
is migrated. Exit 0 when every table is current afterwards (or would be,
with ``--dry-run``), 4 when a table cannot be migrated (its difference is
named and nothing of it changed).
"""

from __future__ import annotations

import json

from lake_core.migrations import ADD_COLUMNS, CURRENT, INCOMPATIBLE, apply_migrations, plan_migrations

EXIT_INCOMPATIBLE = 4


def register(sub, common) -> None:
    p = sub.add_parser(
        "migrate",
        parents=[common],
        help="add the columns this version's tables have to tables an older version wrote",
        description="Compare every Delta table of the lake with this version's schema and add the missing "
        "columns (nullable, appended: Delta ADD COLUMN, no data rewritten; older rows read them as null). "
        "A table that differs otherwise is named and left alone (exit 4).",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)


def run(args, settings) -> int:
    plans = plan_migrations(settings.lake_root)
    if not args.dry_run:
        apply_migrations(plans)
    if args.format == "json":
        print(json.dumps({"dry_run": args.dry_run, "tables": [p.to_json() for p in plans]}, indent=2))
    else:
        for plan in plans:
            print(_line(plan, args.dry_run))
    return EXIT_INCOMPATIBLE if any(p.state == INCOMPATIBLE for p in plans) else 0


def _line(plan, dry_run: bool) -> str:
    if plan.state == ADD_COLUMNS:
        columns = ", ".join(f"{f.name} ({f.type})" for f in plan.add)
        if dry_run:
            return f"{plan.name}: would add {columns} ({plan.detail})"
        return f"{plan.name}: added {columns}, now version {plan.version_after} ({plan.detail})"
    if plan.state == CURRENT:
        return f"{plan.name}: current"
    if plan.state == INCOMPATIBLE:
        return f"{plan.name}: NOT migrated: {plan.detail}; nothing of it was changed ({plan.path})"
    return f"{plan.name}: {plan.detail}"
