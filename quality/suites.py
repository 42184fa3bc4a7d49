"""Great Expectations suites built from ``lake_schemas.rules.EXPECTATIONS``.

A rule is written once, in ``lake_schemas``; this module only translates
each ``Expectation`` into the Great Expectations expectation(s) that check
it, carrying the rule's name and action in ``meta`` so a result can be
traced back. Import it only where a gate runs: importing Great Expectations
costs seconds.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# Great Expectations imports PySpark whenever it is installed (the benchmarks' ``bench`` extra
# installs it for their Spark peer): seconds of a core, in every gate, for an engine the gates
# never use (they validate pandas frames). PySpark is hidden while GE is imported, then shown again.
_HIDE_PYSPARK = "pyspark" not in sys.modules
if _HIDE_PYSPARK:
    sys.modules["pyspark"] = None  # type: ignore[assignment]
try:
    import great_expectations as gx  # noqa: E402
    import great_expectations.expectations as gxe  # noqa: E402
finally:
    if _HIDE_PYSPARK:
        del sys.modules["pyspark"]

from lake_schemas.rules import Expectation, expectations_for  # noqa: E402
from lake_schemas.tables import (  # noqa: E402
    BRONZE_SCHEMA,
    GOLD_VEHICLE_HOURLY_SCHEMA,
    GOLD_VEHICLE_STATE_SCHEMA,
    GOLD_ZONE_HOURLY_SCHEMA,
    SILVER_SCHEMA,
)

__all__ = ["TABLE_SCHEMAS", "build_suite", "rules_of", "translate"]

TABLE_SCHEMAS = {
    "bronze_telemetry": BRONZE_SCHEMA,
    "silver_telemetry": SILVER_SCHEMA,
    "gold_vehicle_hourly": GOLD_VEHICLE_HOURLY_SCHEMA,
    "gold_zone_hourly": GOLD_ZONE_HOURLY_SCHEMA,
    "gold_vehicle_state": GOLD_VEHICLE_STATE_SCHEMA,
}


def translate(rule: Expectation, overrides: Optional[dict] = None) -> list:
    """The GX expectations that check ``rule`` (``overrides`` may replace its ``max_value``)."""
    meta = {"rule": rule.name, "action": rule.action.value, "description": rule.description}
    max_value = (overrides or {}).get(rule.name, rule.max_value)
    cols = rule.columns
    kind = rule.kind
    if kind == "not_null":
        return [gxe.ExpectColumnValuesToNotBeNull(column=c, meta=meta) for c in cols]
    if kind == "between":
        return [
            gxe.ExpectColumnValuesToBeBetween(column=cols[0], min_value=rule.min_value, max_value=max_value, meta=meta)
        ]
    if kind == "unique":
        if len(cols) == 1:
            return [gxe.ExpectColumnValuesToBeUnique(column=cols[0], meta=meta)]
        return [gxe.ExpectCompoundColumnsToBeUnique(column_list=list(cols), meta=meta)]
    if kind == "in_set":
        return [gxe.ExpectColumnValuesToBeInSet(column=cols[0], value_set=list(rule.value_set), meta=meta)]
    if kind == "not_in_set":
        return [gxe.ExpectColumnValuesToNotBeInSet(column=cols[0], value_set=list(rule.value_set), meta=meta)]
    if kind == "regex":
        return [gxe.ExpectColumnValuesToMatchRegex(column=cols[0], regex=rule.pattern, meta=meta)]
    if kind == "a_ge_b":
        return [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=cols[0], column_B=cols[1], or_equal=True, ignore_row_if="either_value_is_missing", meta=meta
            )
        ]
    if kind == "columns_match":
        return [gxe.ExpectTableColumnsToMatchOrderedList(column_list=TABLE_SCHEMAS[rule.table].names, meta=meta)]
    if kind == "max_share":  # at most max_value of the rows have a value
        return [gxe.ExpectColumnValuesToBeNull(column=cols[0], mostly=max(0.0, 1.0 - float(max_value)), meta=meta)]
    if kind == "quarantine":  # a DROP rule: its unexpected rows are the rows it quarantined
        return [gxe.ExpectColumnValuesToNotBeInSet(column=cols[0], value_set=[rule.reason.value], meta=meta)]
    if kind == "sum_equals":
        bound = {"$PARAMETER": rule.param}
        return [gxe.ExpectColumnSumToBeBetween(column=cols[0], min_value=bound, max_value=bound, meta=meta)]
    raise ValueError(f"no Great Expectations translation for kind {kind!r} ({rule.name})")


def rules_of(table: str, scope: str = "rows", schema_rules: Optional[bool] = None) -> list:
    """``table``'s rules of ``scope``; only the schema rules (``columns_match``) or only the others if asked."""
    return [
        r
        for r in expectations_for(table)
        if r.scope == scope and (schema_rules is None or (r.kind == "columns_match") == schema_rules)
    ]


def build_suite(name: str, rules: list, overrides: Optional[dict] = None) -> "gx.ExpectationSuite":
    """A suite checking ``rules`` (``lake_schemas.rules.Expectation``s)."""
    expectations = [e for rule in rules for e in translate(rule, overrides)]
    # Given at construction: adding them one by one rewrites the stored suite each time.
    return gx.ExpectationSuite(
        name=name,
        expectations=expectations,
        meta={"rules": [r.name for r in rules], "source": "lake_schemas.rules.EXPECTATIONS"},
    )
