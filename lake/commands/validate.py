"""``lake validate bronze|silver|gold``: a quality gate on its own.

- ``bronze --hour H``: the Bronze hour as stored;
- ``silver --hour H``: the Silver job for hour H up to its gate, publishing nothing;
- ``silver --date D``: Silver's day D as stored;
- ``gold --date D``: Gold's day D as stored, reconciled with Silver's day D.

Exit 0 when every ``fail`` rule holds, 5 (naming the failed rules) when not.
"""

from __future__ import annotations

import time

from beam_pipelines.job_metrics import push_job_metrics
from beam_pipelines.silver.options import SilverOptions
from lake_core.errors import ConfigError, LakeError
from lake_schemas.paths import parse_hour
from lake_schemas.rules import QUARANTINE_RATE_MAX
from quality.stored import validate_bronze_hour, validate_gold_day, validate_silver_day


def register(sub, common) -> None:
    p = sub.add_parser(
        "validate",
        parents=[common],
        help="run a layer's quality gate (Great Expectations)",
        description="Validate a layer against the rules of lake_schemas.rules; results and Data "
        "Docs go to {LAKE_ROOT}/_quality/. Exits 5 when a fail rule does not hold.",
    )
    p.add_argument("layer", choices=["bronze", "silver", "gold"])
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--hour", help="bronze, silver: the hour, e.g. 2026-03-01T08")
    when.add_argument("--date", help="silver, gold: the day (UTC event date), e.g. 2026-03-01")
    p.add_argument(
        "--max-quarantine-rate",
        type=float,
        default=None,
        metavar="R",
        help="silver --hour: the quarantine share above which the gate fails (default 0.10)",
    )
    p.set_defaults(func=run)


def run(args, settings) -> int:
    started = time.monotonic()
    try:
        code = _run(args, settings)
    except LakeError as exc:  # a failed gate: the Pushgateway hears it (LAKE_PUSHGATEWAY_URL)
        push_job_metrics(f"validate_{args.layer}", time.monotonic() - started, error=exc)
        raise
    push_job_metrics(f"validate_{args.layer}", time.monotonic() - started)
    return code


def _run(args, settings) -> int:
    root = settings.lake_root
    if args.layer == "bronze":
        if not args.hour:
            raise ConfigError("validate bronze takes --hour")
        result = _bronze(root, args.hour)
    elif args.layer == "silver":
        result = _silver_hour(root, args) if args.hour else _silver_day(root, _day(args.date))
    else:
        if not args.date:
            raise ConfigError("validate gold takes --date")
        result = _gold(root, _day(args.date))
    if result is not None:
        warned = (
            f", {len(result.warnings)} warning(s): {', '.join(r.rule for r in result.warnings)}"
            if result.warnings
            else ""
        )
        print(
            f"{args.layer} {result.key}: {len(result.rules)} checks, no failed rule{warned}; "
            f"results: {result.docs or result.summary_path}"
        )
    return 0


def _day(text: str):
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def _hour_ms(text: str) -> int:
    try:
        return int(parse_hour(text).timestamp() * 1000)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _bronze(root: str, hour: str):
    return validate_bronze_hour(root, _hour_ms(hour))


def _silver_hour(root: str, args):
    from beam_pipelines.silver.pipeline import run_silver

    rate = QUARANTINE_RATE_MAX if args.max_quarantine_rate is None else args.max_quarantine_rate
    report = run_silver(SilverOptions(root, args.hour, max_quarantine_rate=rate, publish=False))
    print(
        f"silver {report.hour}: the batch passes its gate ({report.silver_candidates:,} rows would be published, "
        f"{sum(report.quarantined.values()):,} quarantined, {report.gate_warnings} warning(s)); nothing written"
    )
    return None


def _silver_day(root: str, day):
    return validate_silver_day(root, day)


def _gold(root: str, day):
    return validate_gold_day(root, day)
