"""The shared consumer behind the ingest's partition readers, on the real broker: every
partition's records come back in offset order, exactly once, whichever partition asks first,
and a reader that restarts elsewhere (a split, a retry) gets exactly the records from there."""

import time

import pytest

import beam_pipelines.ingest.partition_fetcher as pf
from beam_pipelines.ingest.partition_fetcher import PartitionFetcher
from support.ingest_helpers import T0, produce, snapshot

PER_PARTITION = 300


@pytest.fixture
def loaded(settings):
    records = [(b"k", snapshot(f"V{i}", T0 + i), T0 + i, p) for p in range(4) for i in range(PER_PARTITION)]
    produce(settings, records)
    return settings


def _take_all(fetcher, partition, want, batch=50, seconds=20):
    got = []
    deadline = time.monotonic() + seconds
    while len(got) < want and time.monotonic() < deadline:
        messages, _ = fetcher.take(partition, min(batch, want - len(got)), 0.05)
        got += [m.offset() for m in messages]
    return got


def test_every_partition_in_order_once_with_partitions_served_in_turn(loaded):
    fetcher = PartitionFetcher(loaded.bootstrap, loaded.topic)
    try:
        fetcher.position_all({p: 0 for p in range(4)})
        got = {p: [] for p in range(4)}
        deadline = time.monotonic() + 30
        while any(len(v) < PER_PARTITION for v in got.values()) and time.monotonic() < deadline:
            for p in (3, 1, 0, 2):  # not the order they were produced in
                messages, _ = fetcher.take(p, 40, 0.05)
                assert all(m.partition() == p for m in messages)
                got[p] += [m.offset() for m in messages]
        assert got == {p: list(range(PER_PARTITION)) for p in range(4)}
    finally:
        fetcher.close()


def test_repositioning_backwards_and_forwards_gives_exactly_the_records_from_there(loaded):
    fetcher = PartitionFetcher(loaded.bootstrap, loaded.topic)
    try:
        fetcher.position(1, 0)
        assert _take_all(fetcher, 1, 120) == list(range(120))
        fetcher.position(1, 120)  # where it left off: nothing re-fetched, nothing skipped
        assert _take_all(fetcher, 1, 30) == list(range(120, 150))
        fetcher.position(1, 10)  # backwards (a retried bundle)
        assert _take_all(fetcher, 1, 40) == list(range(10, 50))
        fetcher.position(1, 250)  # forwards past what was stashed
        assert _take_all(fetcher, 1, 50) == list(range(250, 300))
        fetcher.forget_position(1)  # the reader did not keep what it took
        fetcher.position(1, 280)
        assert _take_all(fetcher, 1, 20) == list(range(280, 300))
    finally:
        fetcher.close()


def test_a_partition_nobody_reads_is_paused_at_the_stash_limit_and_resumed_when_drained(loaded, monkeypatch):
    monkeypatch.setattr(pf, "STASH_LIMIT", 100)
    fetcher = PartitionFetcher(loaded.bootstrap, loaded.topic)
    try:
        fetcher.position_all({0: 0, 2: 0})
        assert _take_all(fetcher, 0, PER_PARTITION) == list(range(PER_PARTITION))
        deadline = time.monotonic() + 20
        while 2 not in fetcher._paused and time.monotonic() < deadline:
            fetcher.take(0, 50, 0.05)  # partition 0 is drained: its polls bring partition 2's records
        assert 2 in fetcher._paused and len(fetcher._stash[2]) >= 100
        assert _take_all(fetcher, 2, PER_PARTITION, batch=80) == list(range(PER_PARTITION))
        assert 2 not in fetcher._paused
    finally:
        fetcher.close()
