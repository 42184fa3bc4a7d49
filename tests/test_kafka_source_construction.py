"""The production shapes of the ingest graph, built (not run): Flink/Dataflow cannot run here."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.ingest.bronze_state import BronzeState
from beam_pipelines.ingest.kafka_source import PartitionStart, PassBounds, ReadKafkaCrossLanguage
from beam_pipelines.ingest.options import IngestOptions
from beam_pipelines.ingest.pipeline import beam_options, build
from lake.errors import ConfigError


def _opts(**kw):
    base = dict(lake_root="/tmp/lake", bootstrap="kafka:9092", topic="vehicle-telemetry",
                dlq_topic="vehicle-telemetry-dlq", runner="FlinkRunner")
    base.update(kw)
    return IngestOptions(**base)


def test_streaming_graph_reads_validates_and_writes():
    opts = _opts()
    assert not opts.local
    options = beam_options(opts, ["--flink_master=localhost:8081"])
    assert options.view_as(beam.options.pipeline_options.StandardOptions).streaming
    p = beam.Pipeline(runner="FnApiRunner", options=options)  # the graph only; FlinkRunner would submit it
    starts = [PartitionStart(opts.topic, i, 0, "x") for i in range(3)]
    build(p, opts, starts, PassBounds(), BronzeState())
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    for expected in ("ReadKafkaPartitions", "ValidateTelemetry", "WriteBronze/Buffer",
                     "WriteBronze/GroupByPartition", "WriteBronze/Commit"):
        assert expected in names


def test_cross_language_source_is_configured_for_the_topic():
    source = ReadKafkaCrossLanguage("kafka:9092", "vehicle-telemetry", batch_size=1000)
    assert source.consumer_config["bootstrap.servers"] == "kafka:9092"
    assert source.topic == "vehicle-telemetry" and source.batch_size == 1000


def test_cross_language_source_needs_a_portable_runner():
    with pytest.raises(ConfigError, match="portable runner"):
        _opts(runner="FnApiRunner", kafka_source="xlang").validate()
    _opts(kafka_source="xlang").validate()  # accepted for Flink
