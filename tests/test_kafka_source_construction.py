"""The production shapes of the ingest graph (Flink/Dataflow), built, not run: those runners
cannot run here, and Beam's Java ``ReadFromKafka`` needs its expansion-service jar from the
internet to be applied, so the cross-language branch is wired with a stand-in for that one
transform and everything after it runs on FnApiRunner."""

import os
import time
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from beam_pipelines.ingest.bronze_state import BronzeState, BronzeStore
from beam_pipelines.ingest.bronze_writer import _CommitAndCloseHours
from beam_pipelines.ingest.kafka_source import KafkaBatch, PartitionStart, PassBounds, ReadKafkaCrossLanguage
from beam_pipelines.ingest.options import LOCAL_RUNNERS, IngestOptions
from beam_pipelines.ingest.pipeline import beam_options, build, run_ingest
from beam_pipelines.ingest.validate import ValidateTelemetry, validate_batch
from lake_core.errors import ConfigError
from lake_schemas.paths import HOUR_MS
from support.ingest_helpers import T0, files, markers, snapshot

NATIVE = [
    "PartitionStarts",
    "ReadKafkaPartitions",
    "ReadKafkaPartitions/ReadPartition",
    "ValidateTelemetry",
    "WriteBronze",
    "WriteBronze/Buffer",
    "WriteBronze/GroupByPartition",
    "WriteBronze/GroupFiring",  # every partition of a firing under one key: commits, then the hours they close
    "WriteBronze/CommitAndCloseHours",
]


def _opts(**kw):
    base = dict(
        lake_root="/tmp/lake-never-written",
        bootstrap="kafka:9092",
        topic="vehicle-telemetry",
        dlq_topic="vehicle-telemetry-dlq",
        runner="FlinkRunner",
    )
    base.update(kw)
    return IngestOptions(**base)


def _graph(opts, beam_args=()):
    options = beam_options(opts, list(beam_args))
    p = beam.Pipeline(runner="FnApiRunner", options=options)  # the graph only: FlinkRunner would submit it
    build(p, opts, [PartitionStart(opts.topic, i, 0) for i in range(3)], PassBounds(), BronzeState())
    return p, options, p.to_runner_api()


# -- --kafka-source=xlang ---------------------------------------------------------


@pytest.mark.parametrize("runner", sorted(LOCAL_RUNNERS))
def test_cross_language_source_with_a_local_runner_is_a_config_error(runner):
    with pytest.raises(ConfigError, match="portable runner"):
        _opts(runner=runner, kafka_source="xlang").validate()
    # before any connection: the broker address here answers nothing
    with pytest.raises(ConfigError, match="portable runner"):
        run_ingest(_opts(runner=runner, kafka_source="xlang", bootstrap="127.0.0.1:1"))


@pytest.mark.parametrize("runner", ["FlinkRunner", "DataflowRunner", "PortableRunner"])
def test_cross_language_source_is_accepted_for_portable_runners(runner):
    _opts(runner=runner, kafka_source="xlang").validate()


def test_beams_read_from_kafka_accepts_our_arguments():
    """The transform object is built offline; applying it would fetch the expansion service."""
    from apache_beam.io.kafka import ReadFromKafka

    source = ReadKafkaCrossLanguage("kafka:9092", "vehicle-telemetry", batch_size=1000)
    assert source.consumer_config["bootstrap.servers"] == "kafka:9092"
    assert source.consumer_config["auto.offset.reset"] == "earliest"
    read = ReadFromKafka(
        consumer_config=source.consumer_config,
        topics=[source.topic],
        with_metadata=True,
        commit_offset_in_finalize=True,
    )
    assert read._urn == ReadFromKafka.URN_WITH_METADATA


class _FakeReadFromKafka(beam.PTransform):
    """Stands in for Beam's ``ReadFromKafka(with_metadata=True)``: rows with its field names."""

    calls = []

    def __init__(self, **kwargs):
        super().__init__()
        _FakeReadFromKafka.calls.append(kwargs)

    def expand(self, pbegin):
        rows = [
            beam.Row(
                topic="vehicle-telemetry",
                partition=p,
                offset=o,
                timestamp=T0 + o * 1000,
                key=b"V1",
                value=snapshot("V1", T0 + o * 1000) if o != 7 else b"junk",
                headers=[],
            )
            for p in range(2)
            for o in reversed(range(25))
        ]
        return pbegin | beam.Create(rows)


def test_cross_language_graph_is_wired_and_its_batches_validate(monkeypatch):
    import apache_beam.io.kafka

    monkeypatch.setattr(apache_beam.io.kafka, "ReadFromKafka", _FakeReadFromKafka)
    _FakeReadFromKafka.calls.clear()
    _, options, proto = _graph(_opts(kafka_source="xlang", poll_batch=10))
    names = {t.unique_name for t in proto.components.transforms.values()}
    for expected in (
        "ReadKafkaCrossLanguage",
        "ReadKafkaCrossLanguage/ReadFromKafka",
        "ReadKafkaCrossLanguage/KeyByPartition",
        "ReadKafkaCrossLanguage/Batch",
        "ReadKafkaCrossLanguage/ToKafkaBatch",
        "ValidateTelemetry",
        "WriteBronze/CommitAndCloseHours",
    ):
        assert expected in names
    assert "ReadKafkaPartitions" not in names
    assert _FakeReadFromKafka.calls[0]["topics"] == ["vehicle-telemetry"]
    assert _FakeReadFromKafka.calls[0]["with_metadata"] is True

    # run what follows the Java reader: batches per partition in offset order, then validation
    def check(validated):
        by_partition = {}
        for partition, v in validated:
            assert list(v.bronze["kafka_offset"].to_pylist()) == sorted(v.bronze["kafka_offset"].to_pylist())
            by_partition.setdefault(partition, []).extend(
                v.bronze["kafka_offset"].to_pylist() + v.rejects["kafka_offset"].to_pylist()
            )
            assert all(r.reason.value == "not_json" for _, r, _, _ in v.dlq_values)
        assert {p: sorted(o) for p, o in by_partition.items()} == {0: list(range(25)), 1: list(range(25))}

    with beam.Pipeline(runner="FnApiRunner") as p:
        validated = p | ReadKafkaCrossLanguage("kafka:9092", "vehicle-telemetry", batch_size=10) | ValidateTelemetry()
        assert_that(validated, check)


# -- the native source on a streaming runner ---------------------------------------


@pytest.mark.parametrize("runner", ["FlinkRunner", "DataflowRunner"])
def test_streaming_graph_reads_validates_and_writes(runner):
    opts = _opts(runner=runner, buffer_seconds=90)
    assert not opts.local
    _, options, proto = _graph(opts, ["--flink_master=localhost:8081"] if runner == "FlinkRunner" else [])
    assert options.view_as(StandardOptions).streaming
    transforms = {t.unique_name: t for t in proto.components.transforms.values()}
    for expected in NATIVE:
        assert expected in transforms, expected
    # the buffer is a trigger: every N seconds of processing time or every N batches, discarding
    gbk = transforms["WriteBronze/GroupByPartition"]
    strategy = proto.components.windowing_strategies[
        proto.components.pcollections[next(iter(gbk.inputs.values()))].windowing_strategy_id
    ]
    trigger = strategy.trigger
    assert trigger.WhichOneof("trigger") == "repeat"
    subs = trigger.repeat.subtrigger.after_any.subtriggers
    kinds = {s.WhichOneof("trigger"): s for s in subs}
    assert set(kinds) == {"after_processing_time", "element_count"}
    delay = kinds["after_processing_time"].after_processing_time.timestamp_transforms[0].delay.delay_millis
    assert delay == 90_000
    assert strategy.accumulation_mode == beam.portability.api.beam_runner_api_pb2.AccumulationMode.DISCARDING


def test_local_graph_groups_through_the_pass_through_trigger():
    """FnApiRunner groups a bounded pass once whatever the trigger; only with ``Always`` (on
    global windows) does it skip its element-by-element trigger driver. That each pass then
    commits one group per partition is what the ingest tests check on the real runner."""
    _, options, proto = _graph(_opts(runner="FnApiRunner"))
    assert not options.view_as(StandardOptions).streaming
    transforms = {t.unique_name: t for t in proto.components.transforms.values()}
    gbk = transforms["WriteBronze/GroupByPartition"]
    strategy = proto.components.windowing_strategies[
        proto.components.pcollections[next(iter(gbk.inputs.values()))].windowing_strategy_id
    ]
    assert strategy.trigger.WhichOneof("trigger") == "always"
    assert strategy.accumulation_mode == beam.portability.api.beam_runner_api_pb2.AccumulationMode.DISCARDING


# -- the commit step of a streaming runner closes hours itself -----------------------


def _batch(partition, offsets, stamps, values=None):
    return validate_batch(
        KafkaBatch(
            "vehicle-telemetry",
            partition,
            offsets,
            stamps,
            [b"V1"] * len(offsets),
            values or [snapshot("V1", t) for t in stamps],
        )
    )


def _streaming_commit(root):
    commit = _CommitAndCloseHours(root, "unused:9092", "vehicle-telemetry", None, None, {}, close_hours=(2, 120_000))
    commit.setup()
    return commit


def test_streaming_commit_closes_hours_by_watermark_and_moves_late_records(tmp_path):
    root = str(tmp_path / "lake")
    commit = _streaming_commit(root)
    store = BronzeStore(root)
    end = T0 + HOUR_MS + 120_000  # hour 08 closes when both partitions reach 09:02:00.000
    fire(commit, (0, [_batch(0, [0, 1], [T0 + 1000, end + 60_000])]))
    assert store.complete_hours() == set()  # partition 1 has said nothing
    fire(commit, (1, [_batch(1, [0, 1], [T0 + 2000, end - 1])]))
    assert store.complete_hours() == set()  # one millisecond short
    fire(commit, (1, [_batch(1, [2], [end])]))
    assert store.complete_hours() == {T0}
    assert markers_of(root)[T0]["completed_by"] == "watermark"
    hour8 = sorted(f for f in files_of(root) if "/hour=08/" in f)
    groups = fire(commit, (0, [_batch(0, [2, 3], [T0 + 5000, end + 70_000], [snapshot("V1", T0 + 5000), b"junk"])]))
    late = groups[0].files
    assert late and all("/hour=09/" in f for f in late)  # the earliest open hour
    assert sorted(f for f in files_of(root) if "/hour=08/" in f) == hour8


def test_streaming_no_commit_lands_in_an_hour_closed_under_it(tmp_path, monkeypatch):
    """The race, made deterministic: partition 1's commit of a late hour-08 record is slow, and partition 0's
    watermark passing 09:02 lets hour 08 close. Closing was a side effect of partition 0's commit, so the
    marker was written while partition 1 still wrote into the hour; now it waits for every commit."""
    from beam_pipelines.ingest import bronze_writer

    real = bronze_writer.commit_partition

    def slow_for_partition_1(store, partition, *args, **kwargs):
        if partition == 1:
            time.sleep(0.5)
        return real(store, partition, *args, **kwargs)

    monkeypatch.setattr(bronze_writer, "commit_partition", slow_for_partition_1)
    root = str(tmp_path / "lake")
    commit = _streaming_commit(root)
    end = T0 + HOUR_MS + 120_000
    fire(commit, (1, [_batch(1, [0], [end + 1000])]))  # partition 1 is already past the hour's end
    fire(commit, (0, [_batch(0, [0], [end + 5000])]), (1, [_batch(1, [1], [T0 + 7000])]))  # one firing
    assert BronzeStore(root).complete_hours() == {T0}
    named = {e["file"] for e in markers_of(root)[T0]["files"]}
    in_hour = {os.path.basename(f) for f in files_of(root) if "/hour=08/" in f}
    assert in_hour == named, f"files in the closed hour that its _COMPLETE does not name: {in_hour - named}"


def fire(commit, *elements):
    """One firing of the streaming commit step, as a runner drives it: every partition's batches under one key;
    the partitions commit in parallel, then the hours close."""
    commit.start_bundle()
    out = list(commit.process((0, list(elements)), timestamp=Timestamp(0), window=GlobalWindow()))
    out += list(commit.finish_bundle())
    return [wv.value for wv in out]


def files_of(root):
    lake = SimpleNamespace(lake_root=root)
    return files(lake) + files(lake, "_rejects")


def markers_of(root):
    return markers(SimpleNamespace(lake_root=root))


# -- how a streaming runner is driven ----------------------------------------------


@pytest.mark.parametrize("max_seconds", [None, 30.0])
def test_a_streaming_runner_gets_one_pass_bounded_only_by_max_seconds(max_seconds):
    """Passes are a local-runner device: on Flink the single pipeline never ends on its own
    (idleness, buffer time or bytes), only on --max-seconds. (Flink itself cannot run here.)"""
    import time as _time

    from beam_pipelines.ingest.pipeline import unbounded_pass

    opts = _opts(max_seconds=max_seconds, poll_batch=1234)
    deadline = None if max_seconds is None else _time.monotonic() + max_seconds
    bounds = unbounded_pass(opts, deadline)
    assert bounds.idle_seconds is None and bounds.max_bytes >= 2**62 and bounds.poll_batch == 1234
    assert bounds.max_seconds == float("inf") if max_seconds is None else 0 < bounds.max_seconds <= max_seconds
