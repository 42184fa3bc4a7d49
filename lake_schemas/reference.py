"""Render the reference of every message field, table and column into ``docs/tables.md``.

    python -m lake_schemas.reference           # (re)write docs/tables.md
    python -m lake_schemas.reference --check   # exit 1 when docs/tables.md is stale

Everything comes from the definitions: the message fields
(``fields.MESSAGE_FIELDS``), the Arrow schemas (``tables``, ``hot``), the
meanings (``catalog``) and the rules the quality gates check
(``rules.EXPECTATIONS``, ``rules.QUARANTINE_RULES``). Never edit the
generated file: change the definitions and run this again.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from lake_schemas.catalog import SIGNAL_DOCS, SNAPSHOT_DOCS, TABLE_DOCS, TableDoc
from lake_schemas.fields import MESSAGE_FIELDS, SIGNALS
from lake_schemas.ledger import EQUATIONS, EXIT_IMBALANCE
from lake_schemas.rules import EXPECTATIONS, QUARANTINE_RULES, Action, Expectation

__all__ = ["DEFAULT_OUTPUT", "render", "column_rules", "table_rules", "main"]

#: ``docs/tables.md`` of the checkout this package is in.
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "tables.md"

_ACTION = {Action.FAIL: "fail", Action.WARN: "warn", Action.DROP: "quarantine"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return [_row(header), _row("---" for _ in header), *(_row(r) for r in rows)]


def _num(value: Optional[float]) -> str:
    return "" if value is None else f"{value:g}"


def _bounds(low: Optional[float], high: Optional[float]) -> str:
    if low is not None and high is not None:
        return f"in [{_num(low)}, {_num(high)}]"
    return f">= {_num(low)}" if low is not None else f"<= {_num(high)}"


def _tag(e: Expectation) -> str:
    return f"({_ACTION[e.action]}: `{e.name}`)"


def _column_rule(e: Expectation, column: str) -> Optional[str]:
    """What ``e`` says about ``column``, or None when it is a table-level rule or not about it."""
    if column not in e.columns:
        return None
    kind = e.kind
    if kind == "not_null":
        return f"not null {_tag(e)}"
    if kind == "unique" and len(e.columns) == 1:
        return f"unique {_tag(e)}"
    if kind == "between":
        return f"{_bounds(e.min_value, e.max_value)} {_tag(e)}"
    if kind in ("in_set", "not_in_set"):
        values = ", ".join(f"`{v}`" for v in e.value_set or ())
        return f"{'one of' if kind == 'in_set' else 'not'} {values} {_tag(e)}"
    if kind == "regex":
        return f"matches `{e.pattern}` {_tag(e)}"
    if kind == "a_ge_b" and column == e.columns[0]:
        return f">= `{e.columns[1]}` {_tag(e)}"
    if kind == "sum_equals":
        return f"{e.description} {_tag(e)}"
    return None


def _quarantined_by(column: str) -> list[str]:
    """The quarantine rules whose description names ``column``."""
    return [r.reason.value for r in QUARANTINE_RULES if re.search(rf"\b{re.escape(column)}\b", r.description)]


def _equation_rules(column: str) -> list[str]:
    """The ledger's equations (``ledger.EQUATIONS``) that ``column`` takes part in."""
    out = []
    for e in EQUATIONS:
        if column == e.left:
            out.append(f"left side of `{e.name}`")
        elif column in (t.lstrip("-") for t in e.terms):
            out.append(f"term of `{e.name}`")
        if column == e.stage:
            out.append(f"null: `{e.name}` is pending")
    return out


def column_rules(table: str, column: str) -> list[str]:
    """The checked rules on one column of ``table``, as short phrases."""
    found = [r for e in EXPECTATIONS if e.table == table for r in [_column_rule(e, column)] if r is not None]
    if table == "silver_telemetry":
        found += [f"outside its range: the row is quarantined as `{reason}`" for reason in _quarantined_by(column)]
    if table == "ledger_hours":
        found += _equation_rules(column)
    return found


def table_rules(table: str) -> list[str]:
    """The checked rules on ``table`` as a whole (keys, column sets, batch shares, quarantine)."""
    out = []
    for e in EXPECTATIONS:
        if e.table != table:
            continue
        if e.kind == "columns_match":
            out.append(f"has exactly the columns below {_tag(e)}")
        elif e.kind == "unique" and len(e.columns) > 1:
            out.append(f"unique on ({', '.join(f'`{c}`' for c in e.columns)}) {_tag(e)}")
        elif e.kind in ("quarantine", "max_share"):
            what = e.description or e.name
            out.append(f"{what} {_tag(e)}")
    if table == "ledger_hours":
        out += [
            f"`{e.name}`: {e.describe()}: {e.meaning} (else `lake ledger` exits {EXIT_IMBALANCE})" for e in EQUATIONS
        ]
    return out


def _messages() -> list[str]:
    lines = [
        "## Messages (contract section 1)",
        "",
        "### Snapshot (1a): the envelope",
        "",
        *_table(("field", "rule"), ((f"`{n}`", m) for n, m in SNAPSHOT_DOCS.items())),
        "",
        "### Measurement fields: one definition for the message and the tables",
        "",
        "Every group and field is optional and may be null. The snapshot structs (`lake_schemas.messages`) and "
        "the Silver columns (`tables.MEASUREMENT_FIELDS`) are both built from `lake_schemas.fields.MESSAGE_FIELDS`. "
        "Numbers must be finite (|x| <= 1e15) or the message is rejected (`invalid_value`); the plausible range is "
        "checked in Silver (below).",
        "",
    ]
    signals = {s.column: s for s in SIGNALS}
    rows = []
    for f in MESSAGE_FIELDS:
        sig = signals.get(f.column)
        signal = "" if sig is None else f"`{sig.name}`" + (" (0/1)" if sig.boolean else "")
        plausible = "" if f.low is None and f.high is None else _bounds(f.low, f.high)
        json_type = f.kind.json_type
        rows.append((f"`{f.group}.{f.name}`", signal, f"`{f.column}`", json_type, f.unit, f.meaning, plausible))
    lines += _table(("snapshot field", "signal", "Silver column", "JSON", "unit", "meaning", "plausible"), rows)
    lines += [
        "",
        "### Signal (1b): one value per message",
        "",
        *_table(("field", "rule"), ((f"`{n}`", m) for n, m in SIGNAL_DOCS.items())),
        "",
    ]
    return lines


def _table_section(doc: TableDoc) -> list[str]:
    where = f"`{{LAKE_ROOT}}/{doc.location}`, {doc.storage}"
    sql = f"SQL `{doc.name}`" if doc.sql else "no SQL name"
    lines = [f"### `{doc.name}`", "", f"{where}; {sql}.", "", doc.summary, ""]
    rules = table_rules(doc.name)
    if rules:
        lines += ["Table rules:", "", *(f"- {r}" for r in rules), ""]
    rows = []
    for f in doc.schema:
        meaning = doc.columns.get(f.name, "")
        rows.append(
            (
                f"`{f.name}`",
                f"`{f.type}`",
                "yes" if f.nullable else "no",
                meaning,
                "; ".join(column_rules(doc.name, f.name)),
            )
        )
    lines += _table(("column", "type", "nullable", "meaning", "rules"), rows)
    return [*lines, ""]


def render() -> str:
    """The whole of ``docs/tables.md``."""
    lines = [
        "# Tables and columns of the lake",
        "",
        "<!-- Generated by `python -m lake_schemas.reference` from lake_schemas/. Do not edit by hand: "
        "change the definitions and run it again (tests/test_contract_reference.py fails when this is stale). -->",
        "",
        "The data contract is `shared/CONTRACT.md`; `lake_schemas/` implements it. This reference is generated "
        "from that package: message fields (`fields.py`), schemas (`tables.py`, `hot.py`), meanings "
        "(`catalog.py`) and the rules the quality gates check (`rules.py`: an action `fail` stops the "
        "publication, `warn` is recorded, `quarantine` sends the row to `silver_quarantine`). "
        "The hot store's PostgreSQL tables (schema `hot`, contract section 9) are defined with their DDL in "
        "`lake_core/hot_store.py`.",
        "",
        *_messages(),
        "## Tables",
        "",
        " · ".join(f"[`{d.name}`](#{d.name})" for d in TABLE_DOCS),
        "",
    ]
    for doc in TABLE_DOCS:
        lines += _table_section(doc)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lake_schemas.reference", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: docs/tables.md")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(
                f"{args.output} is stale: run `python -m lake_schemas.reference` and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
