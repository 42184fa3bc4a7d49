"""``lake simulate``: a fleet in simulated time, sent to Kafka, MQTT or a file."""
from __future__ import annotations

import contextlib
import os

from ..errors import ConfigError

SINKS_HELP = "kafka (the --bootstrap broker, --topic), mqtt (env MQTT_HOST/MQTT_PORT, default 127.0.0.1:1883) or jsonl:PATH"


def register(sub, common) -> None:
    from edge_client.config import DEFAULT_START, SHAPES

    p = sub.add_parser("simulate", parents=[common], help="simulate a fleet of vehicles sending telemetry",
                       description="Simulate scooters, e-bikes and cars in simulated time and send their "
                                   "telemetry as fast as the sink takes it (the Kafka record timestamp is "
                                   "the simulated send time).")
    p.add_argument("--vehicles", default="100", help="fleet size (default 100)")
    p.add_argument("--duration", default="1h", help="simulated time: 90s, 30m, 2h (default 1h)")
    p.add_argument("--rate", default="1.0", help="reports per second per vehicle (default 1.0)")
    p.add_argument("--start", default=DEFAULT_START, help=f"simulated start, RFC 3339 (default {DEFAULT_START})")
    p.add_argument("--shape", choices=SHAPES, default="snapshot",
                   help="message shape: snapshot, signal, or mixed (each vehicle one of the two)")
    p.add_argument("--seed", default="42", help="random seed: the same seed sends the same messages (default 42)")
    p.add_argument("--sink", default="kafka", help=SINKS_HELP + " (default kafka)")
    p.add_argument("--realtime", action="store_true", help="pace the ticks on the wall clock")
    p.add_argument("--bad-rate", default="0.001", help="share of malformed messages (default 0.001)")
    p.add_argument("--duplicate-rate", default="0.001", help="share of messages sent twice (default 0.001)")
    p.add_argument("--clock-skew-rate", default="0.002",
                   help="share of vehicles whose clock is hours off (default 0.002)")
    p.add_argument("--gps-glitch-rate", default="0.0005",
                   help="share of position reports reading 0,0 (default 0.0005)")
    p.add_argument("--no-registry", action="store_true", help="do not write the fleet to dims/vehicles")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _number(flag: str, text: str, kind=float):
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{flag} must be {what}, got {text!r}") from None


def build_config(args):
    from edge_client.config import Imperfections, SimulationConfig, parse_duration, parse_start

    rates = Imperfections(
        duplicate_rate=_number("--duplicate-rate", args.duplicate_rate),
        clock_skew_rate=_number("--clock-skew-rate", args.clock_skew_rate),
        gps_glitch_rate=_number("--gps-glitch-rate", args.gps_glitch_rate),
        bad_rate=_number("--bad-rate", args.bad_rate),
    )
    return SimulationConfig(
        vehicles=_number("--vehicles", args.vehicles, int),
        duration_s=parse_duration(args.duration),
        rate_hz=_number("--rate", args.rate),
        start_ms=parse_start(args.start),
        shape=args.shape,
        seed=_number("--seed", args.seed, int),
        imperfections=rates,
        realtime=args.realtime,
    )


def open_sink(sink: str, settings):
    """``kafka``, ``mqtt`` or ``jsonl:PATH`` -> (a connected sender, its description)."""
    from edge_client.senders import JsonlSender, KafkaSender, MqttSender

    if sink == "kafka":
        return KafkaSender(settings.bootstrap, settings.topic), f"kafka {settings.topic} at {settings.bootstrap}"
    if sink == "mqtt":
        host = os.environ.get("MQTT_HOST") or "127.0.0.1"
        port = _number("MQTT_PORT", os.environ.get("MQTT_PORT") or "1883", int)
        return MqttSender(host, port), f"mqtt {host}:{port} telemetry/+"
    if sink.startswith("jsonl:") and len(sink) > len("jsonl:"):
        path = sink[len("jsonl:"):]
        return JsonlSender(path), f"{path}"
    raise ConfigError(f"--sink must be {SINKS_HELP}, got {sink!r}")


def run(args, settings) -> int:
    from edge_client.registry import register_fleet
    from edge_client.simulate import simulate

    config = build_config(args)
    sender, where = open_sink(args.sink, settings)  # fails fast, before anything is written
    try:
        registry = None if args.no_registry else register_fleet(settings.lake_root, config)
        stats = simulate(config, sender, progress=not args.no_progress)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            sender.close()
        raise
    sender.close()
    registered = "" if registry is None else f"; registry dims/vehicles: {registry}"
    print(f"{stats.summary()}; to {where}{registered}")
    return 0
