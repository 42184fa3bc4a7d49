"""The local runner's per-bundle metrics merge stays flat: a stage of thousands of bundles can still be
queried (Beam 2.77 nests one generator per bundle and ``result.metrics()`` died with RecursionError)."""

from __future__ import annotations

import itertools
from typing import Iterable

import apache_beam as beam
from apache_beam.metrics import monitoring_infos
from apache_beam.runners.portability.fn_api_runner import fn_runner

from beam_pipelines import runner_fixes


def _merged_over(bundles: int) -> list:
    merged: Iterable = []
    for _ in range(bundles):  # what FnApiRunner does for each bundle of a stage (fn_runner.py, run_stages)
        one = [monitoring_infos.int64_user_counter("ns", "records", 1, ptransform="step")]
        merged = fn_runner.consolidate_monitoring_infos(itertools.chain(one, merged))
    return list(merged)


def test_thousands_of_bundles_merge_into_one_counter():
    runner_fixes.apply()
    [counter] = _merged_over(5000)
    assert monitoring_infos.extract_counter_value(counter) == 5000


def test_without_the_fix_the_same_merge_overflows():
    original = monitoring_infos.consolidate
    try:
        fn_runner.consolidate_monitoring_infos = original  # Beam's own, lazy
        try:
            _merged_over(5000)
        except RecursionError:
            pass
        else:
            raise AssertionError("Beam's merge no longer nests: runner_fixes may be removed")
    finally:
        runner_fixes.apply()


def test_a_real_pipeline_reports_its_counters():
    counter = beam.metrics.Metrics.counter("ns", "seen")

    def count(x):
        counter.inc()
        return x

    with beam.Pipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create(range(10)) | beam.Map(count)
    result = p.result
    [c] = [c for c in result.metrics().query()["counters"] if c.key.metric.name == "seen"]
    assert c.committed == 10
