"""On S3 a Delta commit is a conditional PUT: two writers never both own one version.

S3 has no atomic rename-if-absent, so delta-rs writes the commit ``_delta_log/<version>.json``
with ``If-None-Match: *`` (``AWS_CONDITIONAL_PUT=etag`` names that mode; the compose stack and
the README set it). A writer whose version another writer took gets a refusal, not a silent
overwrite, and retries on the next version (``lake_core.delta``): both land (two Silver hours
committed at once: ``test_s3_lake.py``). Against moto's standalone server, which honours the
condition as S3 does.
"""

from __future__ import annotations

import os
import re

import boto3
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from support.moto_s3 import ByteRelay, new_bucket, s3_env


@pytest.fixture
def s3_table(s3_endpoint, monkeypatch):
    for key, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    bucket = new_bucket(s3_endpoint)
    return bucket, f"s3://{bucket}/fleet/t"


def test_moto_refuses_a_second_create_of_one_key(s3_table):
    """The primitive itself: without it the next test could pass by luck."""
    bucket, _ = s3_table
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(s3.exceptions.ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_every_delta_commit_is_put_only_if_absent(s3_endpoint, monkeypatch):
    """What delta-rs sends for a commit, read off the wire between it and moto: each
    ``_delta_log/<version>.json`` PUT carries ``If-None-Match: *``, so of two writers of one version
    S3 lets one through (previous test), and the other retries on the next version."""
    relay = ByteRelay(int(s3_endpoint.rsplit(":", 1)[1]), keep_sent=True)
    for key, value in {**s3_env(s3_endpoint), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}.items():
        monkeypatch.setenv(key, value)
    bucket = new_bucket(os.environ["AWS_ENDPOINT_URL"])
    uri = f"s3://{bucket}/fleet/t"
    write_deltalake(uri, pa.table({"writer": ["a"]}))
    write_deltalake(uri, pa.table({"writer": ["b"]}), mode="append")
    assert DeltaTable(uri).version() == 1
    # each request's line and headers, up to the blank line (a body may run straight into the next request)
    commits = re.findall(rb"PUT (\S*/_delta_log/\d{20}\.json) HTTP/1\.1\r\n(.*?)\r\n\r\n", bytes(relay.sent), re.S)
    assert [path.rsplit(b"/", 1)[1] for path, _ in commits] == [b"%020d.json" % v for v in (0, 1)]
    for path, headers in commits:
        assert re.search(rb"^if-none-match: \*\s*$", headers, re.I | re.M), (path, headers[:600])
