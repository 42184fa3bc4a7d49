"""What a gate found, as plain data: importable (and unpicklable) without Great Expectations,
so a job can receive a gate's result from the worker process that ran it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa

__all__ = ["RuleResult", "GateResult", "Batch"]


@dataclass
class RuleResult:
    rule: str
    action: str  # warn | drop | fail
    success: bool
    expectation: str
    column: Optional[str]
    detail: str


@dataclass
class GateResult:
    layer: str  # "silver", "gold", "bronze"
    key: str  # the hour or day validated
    rules: list = field(default_factory=list)
    docs: Optional[str] = None  # Data Docs index (local lakes)
    summary_path: Optional[str] = None

    @property
    def failed(self) -> list:
        return [r for r in self.rules if r.action == "fail" and not r.success]

    @property
    def warnings(self) -> list:
        return [r for r in self.rules if r.action == "warn" and not r.success]

    @property
    def dropped(self) -> dict:
        return {r.rule: r.detail for r in self.rules if r.action == "drop"}

    @property
    def success(self) -> bool:
        return not self.failed

    def describe_failures(self) -> str:
        return "; ".join(f"{r.rule} ({r.expectation}{' on ' + r.column if r.column else ''}: {r.detail})"
                         for r in self.failed)


@dataclass
class Batch:
    """One dataframe to validate against the rules of ``table`` with ``scope``."""

    table: str
    scope: str
    data: pa.Table
