"""``ArrowTableCoder``: tables survive a real shuffle on the local runner, and are sized without encoding."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.arrow_coder import ArrowTableCoder
from beam_pipelines.batch import pipeline_options


def table(n: int) -> pa.Table:
    return pa.table(
        {
            "vehicle_id": [f"V{i % 3}" for i in range(n)],
            "event_ts": pa.array([1772352000000 + i for i in range(n)], pa.timestamp("ms", tz="UTC")),
            "event_date": pa.array([dt.date(2026, 3, 1)] * n, pa.date32()),
            "soc_pct": [None if i % 4 == 0 else float(i) for i in range(n)],
            "error_codes": [["E1"] if i % 5 == 0 else [] for i in range(n)],
        }
    )


def test_round_trip_keeps_schema_and_rows():
    coder = ArrowTableCoder()
    for t in (table(0), table(7), table(1000).slice(10, 20)):
        back = coder.decode(coder.encode(t))
        assert back.schema == t.schema and back.equals(t)


def test_size_comes_from_the_buffers():
    t = table(5000)
    assert ArrowTableCoder().estimate_size(t) == t.nbytes
    assert beam.coders.registry.get_coder(pa.Table) == ArrowTableCoder()


def test_tables_cross_a_shuffle_on_the_local_runner():
    with beam.Pipeline(options=pipeline_options("FnApiRunner", True, [])) as p:
        sums = (
            p
            | beam.Create([3, 50, 1000])
            | "Table" >> beam.Map(table).with_output_types(pa.Table)
            | beam.Reshuffle()  # a fusion break: every table is encoded and decoded here
            | beam.Map(lambda t: (t.num_rows, t.schema.names, t["error_codes"].to_pylist()[:1]))
        )
        assert_that(sums, equal_to([(n, table(1).schema.names, [["E1"]]) for n in (3, 50, 1000)]))
