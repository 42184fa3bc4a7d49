"""``lake query "SQL" [--format table|csv|json]``."""

from __future__ import annotations

import datetime as dt
import decimal
import sys

from lake.query import query
from lake_schemas import TABLES


def register(sub, common) -> None:
    p = sub.add_parser(
        "query",
        parents=[common],
        help="SQL over the lake's tables",
        description="SQL (DuckDB dialect) over: " + ", ".join(TABLES),
    )
    p.add_argument("sql")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--max-rows", type=int, default=200, help="rows shown by --format table (default 200)")
    p.set_defaults(func=run)


def run(args, settings) -> int:
    table = query(args.sql, settings.lake_root)
    if args.format == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, sys.stdout.buffer)
    elif args.format == "json":
        import json

        print(json.dumps(table.to_pylist(), default=json_value))
    else:
        print(format_table(table, args.max_rows))
    return 0


def json_value(value: object) -> object:
    """What ``json`` cannot encode itself: DuckDB's ``sum()`` of integers is a HUGEINT, which arrives as a
    ``Decimal``: whole ones become JSON integers (not the string "10"), others numbers; times ISO 8601."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def format_table(table, max_rows: int = 200) -> str:
    """A plain aligned text table, like psql's."""
    rows = table.slice(0, max_rows).to_pylist()
    names = table.column_names
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    line = lambda values: " | ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    out = [line(names), "-+-".join("-" * w for w in widths), *(line(c) for c in cells)]
    more = table.num_rows - len(rows)
    out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}" + (f", {more} not shown)" if more else ")"))
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
