"""A fix to the local runner (FnApiRunner) of Beam 2.77, applied when a pipeline module is imported.

The runner merges each bundle's metrics into its stage's lazily: the
stage's entry becomes ``consolidate(chain(bundle, previous))``, a generator
over a generator, one level per bundle. Querying the metrics then recurses
once per bundle, and a pass of more than about 900 bundles per stage (a
long streaming pass, or a pass whose commit waited minutes on PostgreSQL)
dies in ``result.metrics()`` with ``RecursionError`` after its work
committed. Materialising each merge keeps the depth at one; the result is
the same list of monitoring infos.
"""

from __future__ import annotations

from typing import Any, Iterable

from apache_beam.metrics import monitoring_infos
from apache_beam.runners.portability.fn_api_runner import fn_runner

__all__ = ["apply"]


def _consolidate_now(metrics: Iterable[Any], key: Any = monitoring_infos.to_key) -> list:
    return list(monitoring_infos.consolidate(metrics, key))


def apply() -> None:
    if getattr(fn_runner, "consolidate_monitoring_infos", None) is not _consolidate_now:
        fn_runner.consolidate_monitoring_infos = _consolidate_now


apply()
