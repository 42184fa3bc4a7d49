"""``lake validate bronze|silver|gold``: a quality gate on its own.

- ``bronze --hour H``: the Bronze hour as stored;
- ``silver --hour H``: the Silver job for hour H up to its gate, publishing nothing;
- ``silver --date D``: Silver's day D as stored;
- ``gold --date D``: Gold's day D as stored, reconciled with Silver's day D.

Exit 0 when every ``fail`` rule holds, 5 (naming the failed rules) when not.
"""
from __future__ import annotations


def register(sub, common) -> None:
    p = sub.add_parser("validate", parents=[common], help="run a layer's quality gate (Great Expectations)",
                       description="Validate a layer against the rules of lake_schemas.rules; results and Data "
                       "Docs go to {LAKE_ROOT}/_quality/. Exits 5 when a fail rule does not hold.")
    p.add_argument("layer", choices=["bronze", "silver", "gold"])
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--hour", help="bronze, silver: the hour, e.g. 2026-03-01T08")
    when.add_argument("--date", help="silver, gold: the day (UTC event date), e.g. 2026-03-01")
    p.add_argument("--max-quarantine-rate", type=float, default=None, metavar="R",
                   help="silver --hour: the quarantine share above which the gate fails (default 0.10)")
    p.set_defaults(func=run)


def run(args, settings) -> int:
    from lake.errors import ConfigError

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
        warned = f", {len(result.warnings)} warning(s): {', '.join(r.rule for r in result.warnings)}" \
            if result.warnings else ""
        print(f"{args.layer} {result.key}: {len(result.rules)} checks, no failed rule{warned}; "
              f"results: {result.docs or result.summary_path}")
    return 0


def _day(text: str):
    import datetime as dt

    from lake.errors import ConfigError

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def _hour_ms(text: str) -> int:
    from lake.errors import ConfigError
    from lake_schemas.paths import parse_hour

    try:
        return int(parse_hour(text).timestamp() * 1000)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _bronze(root: str, hour: str):
    import pyarrow as pa

    from beam_pipelines.silver.bronze_input import list_bronze_hour, read_bronze_file
    from quality.gates import BronzeGate

    listing = list_bronze_hour(root, _hour_ms(hour))
    rows = pa.concat_tables([read_bronze_file(root, f"{listing.directory}/{n}") for n in listing.files])
    return BronzeGate(root)(rows, listing.hour)


def _silver_hour(root: str, args):
    from beam_pipelines.silver.options import SilverOptions
    from beam_pipelines.silver.pipeline import run_silver
    from lake_schemas.rules import QUARANTINE_RATE_MAX

    rate = QUARANTINE_RATE_MAX if args.max_quarantine_rate is None else args.max_quarantine_rate
    report = run_silver(SilverOptions(root, args.hour, max_quarantine_rate=rate, publish=False))
    print(f"silver {report.hour}: the batch passes its gate ({report.silver_candidates:,} rows would be published, "
          f"{sum(report.quarantined.values()):,} quarantined, {report.gate_warnings} warning(s)); nothing written")
    return None


def _read_day(root: str, table: str, day, schema):
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    from lake.errors import LakeDataError
    from lake_schemas import LakePaths
    from lake_schemas.storage import delta_dataset

    path = LakePaths(root).table(table)
    if not DeltaTable.is_deltatable(path):
        raise LakeDataError(f"no {table} table at {path}")
    dataset = delta_dataset(path)
    if "event_date" in schema.names and table != "gold_vehicle_state":
        rows = dataset.to_table(filter=ds.field("event_date") == pa.scalar(day, pa.date32()))
    else:
        rows = dataset.to_table()
    return rows.select([n for n in schema.names if n in rows.column_names]).cast(
        pa.schema([schema.field(n) for n in schema.names if n in rows.column_names]))


def _silver_day(root: str, day):
    from lake.errors import LakeDataError
    from lake_schemas.tables import SILVER_SCHEMA
    from quality.gates import STORED, enforce
    from quality.runner import Batch, run_suites

    rows = _read_day(root, "silver_telemetry", day, SILVER_SCHEMA)
    if rows.num_rows == 0:
        raise LakeDataError(f"Silver has no rows for {day.isoformat()}")
    result = run_suites(root, "silver", day.isoformat(), [Batch("silver_telemetry", "rows", rows)])
    return enforce(result, f"silver day {day.isoformat()}", STORED)


def _gold(root: str, day):
    from lake.errors import LakeDataError
    from lake_schemas.tables import (
        GOLD_VEHICLE_HOURLY_SCHEMA,
        GOLD_VEHICLE_STATE_SCHEMA,
        GOLD_ZONE_HOURLY_SCHEMA,
        SILVER_SCHEMA,
    )
    from quality.gates import GoldGate

    hourly = _read_day(root, "gold_vehicle_hourly", day, GOLD_VEHICLE_HOURLY_SCHEMA)
    if hourly.num_rows == 0:
        raise LakeDataError(f"gold_vehicle_hourly has no rows for {day.isoformat()}: run `lake gold --date` first")
    zone = _read_day(root, "gold_zone_hourly", day, GOLD_ZONE_HOURLY_SCHEMA)
    state = _read_day(root, "gold_vehicle_state", day, GOLD_VEHICLE_STATE_SCHEMA)
    silver_rows = _read_day(root, "silver_telemetry", day, SILVER_SCHEMA).num_rows
    return GoldGate(root, publishing=False)(hourly, zone, state, silver_rows, day)
