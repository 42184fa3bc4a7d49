"""``python -m benchmarks.spool [--vehicles 300] [--duration 600] [--runs 2]``

What the edge spool costs a sender: the simulator's messages (both shapes)
sent to Kafka by a plain ``KafkaSender`` and by ``SpoolingSender(KafkaSender)``
(every message framed, CRC'd and appended to the spool file, fsynced per
window, acknowledged after Kafka's flush), each into a fresh topic, the best
of ``--runs`` each. Last line: ``spool: <N> messages/s, plain <M> messages/s,
ratio <R>`` (the design goal: the spool costs at most about half the rate).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

from benchmarks.common import kafka
from edge_client.config import SimulationConfig
from edge_client.offline_buffer import SpoolingSender
from edge_client.senders import KafkaSender
from edge_client.simulate import message_batches
from lake_core import kafka_admin

START_MS = 1_772_352_000_000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=int, default=300)
    ap.add_argument("--duration", type=int, default=600, help="simulated seconds")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--bootstrap", help="use this Kafka instead of a fresh embedded broker")
    args = ap.parse_args(argv)
    cfg = SimulationConfig(vehicles=args.vehicles, duration_s=args.duration, start_ms=START_MS, shape="mixed", seed=1)
    messages = [m for batch in message_batches(cfg) for m in zip(batch.keys, batch.values, batch.timestamps_ms)]
    work = tempfile.mkdtemp(prefix="lake-bench-spool-")
    with kafka(args.bootstrap) as bootstrap:

        def rate(make) -> float:
            topic = f"bench-spool-{uuid.uuid4().hex[:8]}"
            kafka_admin.ensure_topics(bootstrap, [topic], partitions=4)
            sender = make(topic)
            started = time.perf_counter()
            for message in messages:
                sender.send(*message)
            sender.close()
            return len(messages) / (time.perf_counter() - started)

        plain = spooled = 0.0
        for _ in range(args.runs):  # alternated, so a neighbour's load hits both
            plain = max(plain, rate(lambda t: KafkaSender(bootstrap, t)))
            spooled = max(spooled, rate(lambda t: SpoolingSender(KafkaSender(bootstrap, t), f"{work}/{t}.spool")))
    print(f"{len(messages):,} messages: KafkaSender {plain:,.0f}/s, SpoolingSender(KafkaSender) {spooled:,.0f}/s")
    print(f"spool: {spooled:,.0f} messages/s, plain {plain:,.0f} messages/s, ratio {spooled / plain:.2f}")


if __name__ == "__main__":
    main()
