"""``lake forget --vehicle V``: erase one vehicle from every layer, audited (see ``lake.lifecycle.forget``)."""

from __future__ import annotations


def register(sub, common) -> None:
    p = sub.add_parser(
        "forget",
        parents=[common],
        help="erase one vehicle's data from every table (right to erasure)",
        description="Delete every row of one vehicle from Bronze, rejects, Silver, quarantine, Gold and the "
        "registry, recompute the zone aggregates it was part of, vacuum the old Delta versions that "
        "still hold it, and append what was done to _audit/forget.jsonl. Old table versions "
        "(time travel) are gone afterwards. Forgetting twice is harmless.",
    )
    p.add_argument("--vehicle", required=True, metavar="V", help="the vehicle id")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded in the audit log), e.g. a ticket number")
    p.add_argument("--requested-by", metavar="NAME", help="who asked (default: env USER)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    p.set_defaults(func=run)


def run(args, settings) -> int:
    # Here, not at the top: it imports pyarrow.dataset (and pandas), which `lake --help` does not need.
    from lake.lifecycle.forget import forget_vehicle

    report = forget_vehicle(
        settings.lake_root, args.vehicle, reason=args.reason, requested_by=args.requested_by, dry_run=args.dry_run
    )
    print(report.summary())
    return 0
