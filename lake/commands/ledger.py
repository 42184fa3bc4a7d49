"""``lake ledger --hour H | --date D [--format text|json]``: the conservation ledger's equations.

Prints, per hour, Bronze generation and Kafka partition, the three
equations of contract section 10 with their figures (as the tables are now;
see ``lake_core.ledger``) and exits 6 naming each one that does not hold.
"""

from __future__ import annotations

import datetime as dt
import json

from lake_core.errors import ConfigError, LakeDataError, LedgerImbalance
from lake_core.ledger import LedgerReport, check_hours, hours_of_day
from lake_core.ledger_hot import compare_with_hot
from lake_core.settings import env
from lake_schemas.hot import DEFAULT_HOT_DSN
from lake_schemas.paths import parse_hour


def register(sub, common) -> None:
    p = sub.add_parser(
        "ledger",
        parents=[common],
        help="check that every record of an hour or a day is accounted for (exit 6 when not)",
        description="The conservation ledger (_ledger/hours, SQL ledger_hours): per hour and Kafka partition, "
        "offsets consumed = Bronze rows + rejects (+ gaps), Bronze rows = new Silver + quarantined + "
        "duplicates + paired positions, Gold event_count = Silver rows of the hour. Exit 6 when one "
        "does not hold.",
    )
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--hour", help="a Bronze hour, e.g. 2026-03-01T08")
    when.add_argument("--date", help="a UTC day, e.g. 2026-03-01 (its 24 hours)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument(
        "--hot-dsn",
        help="compare with the hot path's 1-minute counts in this PostgreSQL (default: env LAKE_HOT_DSN, else the "
        "local lake_hot); skipped when unreachable or without its tables",
    )
    p.add_argument("--no-hot", action="store_true", help="do not compare with the hot path")
    p.set_defaults(func=run)


def _hours(args) -> list:
    if args.hour:
        try:
            parse_hour(args.hour)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return [args.hour]
    try:
        day = dt.date.fromisoformat(args.date)
    except ValueError:
        raise ConfigError(f"not a date: {args.date!r} (expected YYYY-MM-DD)") from None
    return hours_of_day(day)


def run(args, settings) -> int:
    hours = _hours(args)
    report = check_hours(settings.lake_root, hours)
    if not report.rows:
        raise LakeDataError(
            f"nothing to account for in {args.hour or args.date}: no Bronze files, no ledger rows, no Silver rows"
        )
    hot = None if args.no_hot else compare_with_hot(settings.lake_root, args.hot_dsn or _hot_dsn(), hours)
    if args.format == "json":
        body = report.to_json()
        body["hot_path"] = None if hot is None else [h.to_json() for h in hot]
        print(json.dumps(body, default=str))
    else:
        print(format_report(report))
        if hot is not None:
            print(format_hot(hot))
    if not report.holds:
        raise LedgerImbalance(f"the ledger does not balance: {report.describe_imbalances()}")
    return 0


def _hot_dsn() -> str:
    return env("LAKE_HOT_DSN") or DEFAULT_HOT_DSN


def format_hot(hours: list) -> str:
    """The hot path beside Gold: one line per hour, the vehicles a difference is not explained for."""
    lines = []
    for h in hours:
        verdict = "explained" if h.explained else f"UNEXPLAINED for {len(h.differences)} vehicle(s)"
        lines.append(
            f"{h.hour} hot path: 1-minute counts {h.hot:,}, gold event_count {h.gold:,}, "
            f"{h.late_for_hot:,} after the hot windows closed: {verdict}"
        )
        for vehicle, difference in list(h.differences.items())[:20]:
            lines.append(f"    {vehicle}: hot {difference:+,}")
    return "\n".join(lines)


def _terms(terms: dict) -> str:
    shown = [(t, v) for t, v in terms.items() if v] or list(terms.items())[:1]
    text = " ".join(f"{'-' if v < 0 else '+'} {t} {abs(v):,}" for t, v in shown)
    return text[2:] if text.startswith("+ ") else text


def format_report(report: LedgerReport) -> str:
    """One line per row and equation: status, the equation with its figures (zero terms left out)."""
    lines = []
    for row in report.rows:
        where = f"{row.hour} p{row.kafka_partition}" + (f" g{row.generation}" if row.generation else "")
        for e in row.equations:
            left = e.equation.split(" ", 1)[0]
            note = f"  ({e.note})" if e.note else ""
            lines.append(f"{where:<19} {e.name:<6} {e.status.upper():<9} {left} {e.left:,} = {_terms(e.terms)}{note}")
    verdict = "balanced" if report.holds else f"{len(report.imbalances)} imbalance(s)"
    lines.append(f"({len(report.rows)} row(s) over {len(report.hours)} hour(s): {verdict})")
    return "\n".join(lines)
