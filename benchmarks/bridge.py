"""``python -m benchmarks.bridge --messages 200000``

Mosquitto (``lake mqtt start``) -> MQTT-to-Kafka bridge -> embedded Kafka, at
QoS 1, every message acknowledged. For each contender a persistent session is
created, ``--messages`` snapshots are published into it by eight devices
(``mosquitto_pub -l``, one per vehicle, so publishing is not timed), then the
contender is started and timed from its subscription until Kafka holds every
message. Contenders, in one run:

- ``plain``: the loop a data engineer would write first with the same MQTT
  client (gmqtt) -> confluent-kafka, no checks, PUBACK only after Kafka's
  delivery report (the bridge's guarantee);
- ``plain-autoack``: the same loop letting gmqtt acknowledge on receipt (what
  the guarantee costs; loses messages when killed);
- ``plain-paho``: the ``plain`` loop with paho-mqtt (``manual_ack``), the other
  client candidate (run it with ``--contenders plain,plain-paho``);
- ``bridge``: ``lake bridge mqtt`` as a user runs it.

CPU seconds per 10K messages are those of the contender's process and of
Mosquitto over the timed window. The last line is
``bridge: <N> messages/s, baseline <M> messages/s, ratio <R>`` (baseline: ``plain``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import kafka
from benchmarks.measure import child_env, lake_command
from lake.edge import mosquitto
from lake_core import kafka_admin
from lake_core.devices import DeviceStore
from lake_core.processes import free_port
from lake_core.settings import Settings

DEVICES = 8
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class TopicCounter:
    """Counts the records of a topic by reading it (the embedded broker's high watermarks count batches)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watch", "fetch.wait.max.ms": 10})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.count = 0

    def read(self) -> int:
        self.count += sum(m.error() is None for m in self.consumer.consume(10_000, 0.05))
        return self.count

    def close(self) -> None:
        self.consumer.close()


# -- the plain loop, run in its own process ---------------------------------------------------------


def plain_loop(argv: list) -> None:
    """``python -m benchmarks.bridge plain HOST PORT USER PASSWORD CLIENT_ID BOOTSTRAP TOPIC ACK``"""
    import asyncio

    import gmqtt
    from confluent_kafka import Producer

    host, port, user, password, client_id, bootstrap, topic, ack = argv
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "compression.type": "lz4"})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        after_delivery = ack == "after-delivery"
        client = gmqtt.Client(
            client_id,
            clean_session=False,
            optimistic_acknowledgement=not after_delivery,
            session_expiry_interval=3600,
            receive_maximum=5000,
        )
        client.set_auth_credentials(user, password)

        async def on_message_acked(c, t, payload, qos, props):
            done = loop.create_future()
            producer.produce(topic, payload, t[10:], on_delivery=lambda err, msg: done.set_result(err))
            await done
            return 0

        def on_message_auto(c, t, payload, qos, props):
            producer.produce(topic, payload, t[10:])
            return 0

        client.on_message = on_message_acked if after_delivery else on_message_auto
        print("connecting", flush=True)
        await client.connect(host, int(port), version=gmqtt.constants.MQTTv50)
        client.subscribe("telemetry/+", qos=1)
        while not stop.is_set():
            producer.poll(0)
            await asyncio.sleep(0.001)
        producer.flush(30)
        await asyncio.sleep(0.01)
        await client.disconnect()

    asyncio.run(main())


def plain_loop_paho(argv: list) -> None:
    """The same plain loop with paho-mqtt (threads, ``manual_ack``): the other candidate client.

    aiomqtt is not measured on its own: it is paho-mqtt under an asyncio wrapper, so per message it
    does paho's work and more."""
    import threading

    import paho.mqtt.client as mqtt
    from confluent_kafka import Producer
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    host, port, user, password, client_id, bootstrap, topic, _ack = argv
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "compression.type": "lz4"})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    client.username_pw_set(user, password)
    client.max_inflight_messages_set(5000)

    def on_message(c, userdata, msg) -> None:
        mid, qos = msg.mid, msg.qos
        producer.produce(topic, msg.payload, msg.topic[10:], on_delivery=lambda err, m: c.ack(mid, qos))

    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 5000
    print("connecting", flush=True)
    client.connect(host, int(port), clean_start=False, properties=props)
    client.subscribe("telemetry/+", qos=1)
    client.loop_start()
    while not stop.is_set():
        producer.poll(0.001)  # delivery reports (and so the PUBACKs) are served here
    producer.flush(30)
    client.disconnect()
    client.loop_stop()


# -- the run ----------------------------------------------------------------------------------------


class Edge:
    """A lake with eight devices and its Mosquitto, in a folder the mosquitto user can enter."""

    def __init__(self, bootstrap: str):
        self.root = tempfile.mkdtemp(prefix="lake-bench-edge-")
        os.chmod(self.root, 0o711)
        self.settings = Settings(lake_root=self.root, bootstrap=bootstrap)
        self.secrets = DeviceStore(self.root).add_many([(f"V{i}", "scooter") for i in range(DEVICES)])
        self.port = free_port()
        self.info = mosquitto.start_mosquitto(self.settings, port=self.port)
        self.bridge_secret = mosquitto.bridge_secret(self.settings)

    def close(self) -> None:
        mosquitto.stop_mosquitto(self.settings)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_session(self, client_id: str) -> None:
        """Subscribe once and leave: Mosquitto queues what is published meanwhile for ``client_id``."""
        code = (
            "import asyncio, gmqtt, sys\n"
            "async def m():\n"
            "    c = gmqtt.Client(sys.argv[1], clean_session=False, session_expiry_interval=3600)\n"
            "    c.set_auth_credentials(sys.argv[2], sys.argv[3])\n"
            "    done = asyncio.Event(); c.on_subscribe = lambda *a: done.set()\n"
            "    await c.connect('127.0.0.1', int(sys.argv[4]), version=gmqtt.constants.MQTTv50)\n"
            "    c.subscribe('telemetry/+', qos=1); await asyncio.wait_for(done.wait(), 10)\n"
            "    await c.disconnect()\n"
            "asyncio.run(m())\n"
        )
        cmd = [sys.executable, "-c", code, client_id, mosquitto.BRIDGE_USER, self.bridge_secret, str(self.port)]
        subprocess.run(cmd, check=True, timeout=30)

    def publish(self, messages: int) -> int:
        per_device = messages // DEVICES
        started = time.perf_counter()
        procs = []
        payload_bytes = 0
        for vid, secret in self.secrets.items():
            lines = "".join(
                json.dumps(
                    {
                        "schema_version": 1,
                        "event_id": str(uuid.uuid4()),
                        "vehicle_id": vid,
                        "ts": 1772352000000 + k * 1000,
                        "location": {"lat": 52.52, "lon": 13.405},
                        "battery": {"soc_pct": 80.5, "voltage_v": 48.1},
                        "motion": {"speed_kmh": 18.2},
                    },
                    separators=(",", ":"),
                )
                + "\n"
                for k in range(per_device)
            )
            payload_bytes += len(lines) - per_device
            proc = subprocess.Popen(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-u", vid, "-P", secret]
                + ["-t", f"telemetry/{vid}", "-q", "1", "-l"],
                stdin=subprocess.PIPE,
            )
            proc.stdin.write(lines.encode())
            proc.stdin.close()
            procs.append(proc)
        for proc in procs:
            if proc.wait() != 0:
                sys.exit("mosquitto_pub failed")
        total = per_device * DEVICES
        print(
            f"  published {total:,} messages ({payload_bytes / total:.0f} bytes each) in "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
        return total


def run_contender(edge: Edge, name: str, bootstrap: str, messages: int, partitions: int) -> dict:
    topic = f"bench-bridge-{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(bootstrap, [topic, f"{topic}-dlq"], partitions)
    client_id = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    edge.create_session(client_id)
    total = edge.publish(messages)
    work = tempfile.mkdtemp(prefix="lake-bench-bridge-")
    log = Path(work) / "out.log"
    if name == "bridge":
        cmd = lake_command(
            "bridge",
            "mqtt",
            "--lake-root",
            edge.root,
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--mqtt-port",
            str(edge.port),
            "--client-id",
            client_id,
            "--log-every",
            "5",
        )
    else:
        ack = "on-receipt" if name == "plain-autoack" else "after-delivery"
        cmd = [sys.executable, "-m", "benchmarks.bridge", "plain-paho" if name == "plain-paho" else "plain"]
        cmd += ["127.0.0.1", str(edge.port), mosquitto.BRIDGE_USER, edge.bridge_secret, client_id, bootstrap]
        cmd += [topic, ack]
    counter = TopicCounter(bootstrap, topic, partitions)
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=child_env())
    try:
        while "connecting" not in log.read_text():
            if proc.poll() is not None:
                sys.exit(f"{name} exited {proc.returncode}: {log.read_text()[-500:]}")
            time.sleep(0.002)
        started, cpu0, mq0 = time.perf_counter(), cpu_seconds(proc.pid), cpu_seconds(edge.info.pid)
        while counter.read() < total:
            if proc.poll() is not None:
                sys.exit(f"{name} exited {proc.returncode}: {log.read_text()[-500:]}")
        seconds = time.perf_counter() - started
        cpu, mq = cpu_seconds(proc.pid) - cpu0, cpu_seconds(edge.info.pid) - mq0
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        counter.close()
    if code != 0:
        sys.exit(f"{name} stopped with exit {code}: {log.read_text()[-500:]}")
    if name == "bridge":
        last = [ln for ln in log.read_text().splitlines() if "bridge stopped" in ln][-1]
        forwarded = int(re.search(r"forwarded (\d+)", last).group(1))
        if forwarded < total:
            sys.exit(f"the bridge acknowledged {forwarded:,} of {total:,} messages")
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "name": name,
        "messages": total,
        "seconds": seconds,
        "rate": total / seconds,
        "cpu_per_10k": cpu / total * 10_000,
        "mosquitto_cpu_per_10k": mq / total * 10_000,
    }
    print(
        f"{name}: {total:,} messages in {seconds:.2f}s = {result['rate']:,.0f} messages/s; CPU per 10K messages: "
        f"{result['cpu_per_10k']:.3f}s in the {name} process, {result['mosquitto_cpu_per_10k']:.3f}s in Mosquitto",
        flush=True,
    )
    return result


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plain"]:
        plain_loop(argv[1:])
        return
    if argv[:1] == ["plain-paho"]:
        plain_loop_paho(argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--bootstrap", help="use this Kafka instead of a fresh embedded broker")
    ap.add_argument("--contenders", default="plain,plain-autoack,bridge")
    args = ap.parse_args(argv)
    if shutil.which("mosquitto_pub") is None:
        sys.exit("mosquitto_pub is missing: scripts/system-deps installs mosquitto-clients")
    with kafka(args.bootstrap) as bootstrap:
        edge = Edge(bootstrap)
        try:
            results = {
                name: run_contender(edge, name, bootstrap, args.messages, args.partitions)
                for name in args.contenders.split(",")
            }
        finally:
            edge.close()
    if "bridge" in results and "plain" in results:
        rate, base = results["bridge"]["rate"], results["plain"]["rate"]
        print(f"bridge: {rate:,.0f} messages/s, baseline {base:,.0f} messages/s, ratio {rate / base:.2f}")


if __name__ == "__main__":
    main()
