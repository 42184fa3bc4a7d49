"""One writer per lake and topic: the lease, locally (flock) and on S3 (conditional PUT, moto's server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from lake_core.lease import Lease, LeaseHeld, LeaseLost, lease_path
from support.moto_s3 import new_bucket, s3_env

HOLD = textwrap.dedent(
    """
    import sys, time
    from lake_core.lease import Lease
    lease = Lease(sys.argv[1], "ingest-t", "ingest t").acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def _holder(root: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, root], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_first_then_takes_over_when_it_dies(tmp_path):
    root = str(tmp_path)
    first = _holder(root)
    try:
        with pytest.raises(LeaseHeld, match=f"pid {first.pid} on ") as refused:
            Lease(root, "ingest-t", "ingest t").acquire()
        assert refused.value.exit_code == 3 and "since" in str(refused.value)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    lease = Lease(root, "ingest-t", "ingest t").acquire()  # the kernel released the dead holder's lock
    assert lease.previous is not None and lease.previous.pid == first.pid
    lease.renew()
    lease.release()
    assert not os.path.exists(lease_path(root, "ingest-t"))
    with Lease(root, "ingest-t", "ingest t"):
        pass


def test_leases_of_two_topics_do_not_collide(tmp_path):
    with Lease(str(tmp_path), "ingest-a", "ingest a"), Lease(str(tmp_path), "ingest-b", "ingest b"):
        pass


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch):
    for key, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    return f"s3://{new_bucket(s3_endpoint)}/fleet"


def test_on_s3_exactly_one_of_two_racing_writers_wins(s3_root):
    now = [1_000.0]
    first = Lease(s3_root, "ingest-t", "ingest t", ttl_s=60, clock=lambda: now[0]).acquire()
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
        Lease(s3_root, "ingest-t", "ingest t", ttl_s=60, clock=lambda: now[0]).acquire()
    now[0] += 30
    first.renew()  # pushes the expiry to 1090
    now[0] += 45
    with pytest.raises(LeaseHeld):
        Lease(s3_root, "ingest-t", "ingest t", ttl_s=60, clock=lambda: now[0]).acquire()
    now[0] += 60  # first stopped renewing (killed): expired
    second = Lease(s3_root, "ingest-t", "ingest t", ttl_s=60, clock=lambda: now[0]).acquire()
    assert second.previous is not None and second.previous.owner == first.record.owner
    with pytest.raises(LeaseLost, match="taken over"):
        first.renew()  # the conditional PUT on the version it read fails: it learns it lost
    second.release()
    third = Lease(s3_root, "ingest-t", "ingest t", ttl_s=60, clock=lambda: now[0]).acquire()
    assert third.previous is None
    third.release()


def test_on_s3_a_create_race_has_one_winner(s3_root):
    """Two writers both see no lease and both PUT: If-None-Match lets one through."""
    a = Lease(s3_root, "ingest-r", "ingest r")
    b = Lease(s3_root, "ingest-r", "ingest r")
    store_b = b._store
    real_get = store_b._get
    reads = []

    def stale_first_read():  # b read before a wrote; afterwards it reads what is there
        reads.append(1)
        return None if len(reads) == 1 else real_get()

    store_b._get = stale_first_read
    a.acquire()
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
        b.acquire()
    a.release()
