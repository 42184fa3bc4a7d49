"""A gate on a lake in object storage keeps its results and its Data Docs pages there too
(``{LAKE_ROOT}/_quality/``), written through the lake's own filesystem; a loopback S3 endpoint
stands in for MinIO/S3."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lake_schemas.tables import BRONZE_SCHEMA
from quality.gates import BronzeGate
from quality.runner import remote_docs_index
from support.fake_s3 import FakeS3

HOUR = "2026-03-01T08"
T0 = 1772352000000  # 2026-03-01T08:00:00Z


@pytest.fixture
def s3_lake(monkeypatch):
    from lake_core import storage

    with FakeS3() as s3:
        for key, value in {
            "AWS_ENDPOINT_URL": s3.url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }.items():
            monkeypatch.setenv(key, value)
        storage.filesystem.cache_clear()
        yield s3, "s3://lake"
        storage.filesystem.cache_clear()


def _bronze_rows(n: int) -> pa.Table:
    ts = pa.array([T0 + i * 1000 for i in range(n)], pa.int64())
    columns = {
        "kafka_topic": ["vehicle-telemetry"] * n,
        "kafka_partition": pa.array([0] * n, pa.int32()),
        "kafka_offset": pa.array(range(n), pa.int64()),
        "ingest_ts": ts,
        "key": [f"V{i % 3}" for i in range(n)],
        "payload": ['{"x": 1}'] * n,
        "vehicle_id": [f"V{i % 3}" for i in range(n)],
        "event_ts": ts,
    }
    arrays = [
        pa.array(columns[f.name]).cast(f.type)
        if not isinstance(columns[f.name], pa.Array)
        else columns[f.name].cast(f.type)
        for f in BRONZE_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=BRONZE_SCHEMA)


def test_results_and_data_docs_land_next_to_a_remote_lake(s3_lake):
    s3, root = s3_lake
    outcome = BronzeGate(root)(_bronze_rows(20), HOUR)
    assert outcome.success
    keys = s3.keys("lake")
    assert any(k.startswith(f"_quality/results/bronze/{HOUR}/") and k.endswith(".json") for k in keys), keys
    assert "_quality/data_docs/index.html" in keys
    pages = [k for k in keys if k.startswith("_quality/data_docs/validations/") and k.endswith(".html")]
    assert pages, keys
    assert remote_docs_index(root) == "s3://lake/_quality/data_docs/index.html"
    assert outcome.docs == remote_docs_index(root)
