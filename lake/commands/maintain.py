"""``lake maintain``: retention, compaction and vacuum of every table (see ``lake.lifecycle.maintenance``)."""

from __future__ import annotations

import time

from beam_pipelines.job_metrics import push_job_metrics
from lake.lifecycle.checks import parse_now
from lake.lifecycle.limits import DEFAULT_BRONZE_DAYS, DEFAULT_GOLD_DAYS, DEFAULT_SILVER_DAYS, DEFAULT_VACUUM_HOURS
from lake.lifecycle.maintenance import maintain
from lake_core.errors import LakeError


def register(sub, common) -> None:
    p = sub.add_parser(
        "maintain",
        parents=[common],
        help="apply retention, compact small files, vacuum (all tables)",
        description="Delete Bronze hours and Silver/Gold days older than their retention, compact the Delta "
        "tables' small files, vacuum files no recent version needs (including those failed commits "
        "left), and append the report to _audit/maintenance.jsonl. Running it twice changes nothing "
        "the second time.",
    )
    p.add_argument(
        "--bronze-days",
        type=int,
        default=DEFAULT_BRONZE_DAYS,
        metavar="N",
        help=f"Bronze and rejects keep N days (default {DEFAULT_BRONZE_DAYS})",
    )
    p.add_argument(
        "--silver-days",
        type=int,
        default=DEFAULT_SILVER_DAYS,
        metavar="N",
        help=f"silver/telemetry and silver/quarantine keep N days (default {DEFAULT_SILVER_DAYS})",
    )
    p.add_argument(
        "--gold-days",
        type=int,
        default=DEFAULT_GOLD_DAYS,
        metavar="N",
        help=f"gold/vehicle_hourly and gold/zone_hourly keep N days (default {DEFAULT_GOLD_DAYS}); "
        "gold/vehicle_state and dims/vehicles never expire",
    )
    p.add_argument(
        "--vacuum-hours",
        type=int,
        default=DEFAULT_VACUUM_HOURS,
        metavar="H",
        help=f"vacuum keeps the files of versions younger than H hours (default {DEFAULT_VACUUM_HOURS:g}; "
        "under 168 needs --force)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="allow --vacuum-hours under 168 (only while no job writes and no reader reads the lake)",
    )
    p.add_argument("--dry-run", action="store_true", help="report what would be done; change nothing")
    p.add_argument(
        "--now",
        metavar="ISO",
        help="count retention from this time (default: now; e.g. 2026-03-01T00:00:00Z, UTC when no offset is given)",
    )
    p.set_defaults(func=run)


def run(args, settings) -> int:
    started = time.monotonic()
    try:
        report = _maintain(args, settings)
    except LakeError as exc:
        push_job_metrics("maintain", time.monotonic() - started, error=exc)
        raise
    if not args.dry_run:  # the Pushgateway (LAKE_PUSHGATEWAY_URL) keeps the last real run
        push_job_metrics("maintain", time.monotonic() - started, report)
    print(report.summary())
    return 0


def _maintain(args, settings):
    now = parse_now(args.now) if args.now else None
    return maintain(
        settings.lake_root,
        now=now,
        bronze_days=args.bronze_days,
        silver_days=args.silver_days,
        gold_days=args.gold_days,
        vacuum_hours=args.vacuum_hours,
        dry_run=args.dry_run,
        force=args.force,
    )
