"""``lake simulate``: a fleet in simulated time, sent to Kafka, MQTT or a file."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import urllib.parse
from typing import Mapping, Optional

from edge_client.config import DEFAULT_START, SHAPES, Imperfections, SimulationConfig, parse_duration, parse_start
from edge_client.device_keys import load_keys, save_keys
from edge_client.fleet_mqtt import FleetMqttSender
from edge_client.http_sender import HttpSender
from edge_client.offline_buffer import SpoolingSender
from edge_client.senders import JsonlSender, KafkaSender
from edge_client.simulate import build_fleet, simulate
from lake.edge import mosquitto
from lake.edge.reload import after_credentials_change
from lake.edge.spool_metrics import serve_spool_metrics
from lake_core.devices import DeviceStore
from lake_core.errors import BrokerUnavailableError, ConfigError
from lake_core.registry import upsert_vehicles
from lake_core.settings import env
from lake_core.storage import fs_path

SINKS_HELP = (
    "kafka (the --bootstrap broker, --topic), mqtt (each vehicle logs in as itself; env MQTT_HOST/MQTT_PORT, "
    "else the Mosquitto of `lake mqtt start`, else 127.0.0.1:1884), http (each vehicle with its bearer secret; "
    "env LAKE_GATEWAY_URL, default http://127.0.0.1:8000, `lake gateway`) or jsonl:PATH"
)
EDGE_SINKS = ("mqtt", "http")


def register(sub, common) -> None:
    p = sub.add_parser(
        "simulate",
        parents=[common],
        help="simulate a fleet of vehicles sending telemetry",
        description="Simulate scooters, e-bikes and cars in simulated time and send their "
        "telemetry as fast as the sink takes it (the Kafka record timestamp is "
        "the simulated send time).",
    )
    p.add_argument("--vehicles", default="100", help="fleet size (default 100)")
    p.add_argument("--duration", default="1h", help="simulated time: 90s, 30m, 2h (default 1h)")
    p.add_argument("--rate", default="1.0", help="reports per second per vehicle (default 1.0)")
    p.add_argument("--start", default=DEFAULT_START, help=f"simulated start, RFC 3339 (default {DEFAULT_START})")
    p.add_argument(
        "--shape",
        choices=SHAPES,
        default="snapshot",
        help="message shape: snapshot, signal, or mixed (each vehicle one of the two)",
    )
    p.add_argument("--seed", default="42", help="random seed: the same seed sends the same messages (default 42)")
    p.add_argument("--sink", default="kafka", help=SINKS_HELP + " (default kafka)")
    p.add_argument("--realtime", action="store_true", help="pace the ticks on the wall clock")
    p.add_argument("--bad-rate", default="0.001", help="share of malformed messages (default 0.001)")
    p.add_argument("--duplicate-rate", default="0.001", help="share of messages sent twice (default 0.001)")
    p.add_argument(
        "--clock-skew-rate", default="0.002", help="share of vehicles whose clock is hours off (default 0.002)"
    )
    p.add_argument("--gps-glitch-rate", default="0.0005", help="share of position reports reading 0,0 (default 0.0005)")
    p.add_argument(
        "--silence-rate",
        default="0",
        help="chance per vehicle and hour that it loses its uplink for 3 to 40 minutes, its messages of that "
        "time lost (the hot path's offline alerts; default 0)",
    )
    p.add_argument("--no-registry", action="store_true", help="do not write the fleet to dims/vehicles")
    p.add_argument(
        "--device-keys",
        help="mqtt/http sinks: the simulated devices' secrets file; vehicles without one get credentials "
        "(`lake devices`) when the fleet is created (default: env LAKE_DEVICE_KEYS, else "
        "<lake root>/_local/fleet_keys.json)",
    )
    p.add_argument(
        "--spool",
        help="store and forward through a durable spool file (what a vehicle does on a flaky link): "
        "every message is spooled before it is sent and removed once the uplink confirmed it; what "
        "a run could not deliver is sent first by the next run. `none` sends directly. Default: "
        "env LAKE_SPOOL, else <lake root>/_local/spool/<sink>.spool for mqtt and http, none for kafka",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="with a spool: serve its depth, size and the uplink's state on this port for Prometheus "
        "(lake_edge_spool_messages, ...; default: none)",
    )
    p.add_argument("--metrics-host", default="127.0.0.1", help="interface for --metrics-port (default 127.0.0.1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _number(flag: str, text: str, kind=float):
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{flag} must be {what}, got {text!r}") from None


def build_config(args):
    rates = Imperfections(
        duplicate_rate=_number("--duplicate-rate", args.duplicate_rate),
        clock_skew_rate=_number("--clock-skew-rate", args.clock_skew_rate),
        gps_glitch_rate=_number("--gps-glitch-rate", args.gps_glitch_rate),
        bad_rate=_number("--bad-rate", args.bad_rate),
        silence_rate=_number("--silence-rate", args.silence_rate),
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


def check_sink(sink: str, settings) -> None:
    """An unknown sink, or an MQTT broker or gateway that does not answer, fails before anything is written."""
    if sink == "mqtt":
        _reachable("MQTT broker (`lake mqtt start`)", *_mqtt_address(settings))
    elif sink == "http":
        url = urllib.parse.urlsplit(_gateway_url())
        _reachable("HTTP gateway (`lake gateway`)", url.hostname or "127.0.0.1", url.port or 80)
    elif sink != "kafka" and not (sink.startswith("jsonl:") and len(sink) > len("jsonl:")):
        raise ConfigError(f"--sink must be {SINKS_HELP}, got {sink!r}")


def _mqtt_address(settings) -> tuple[str, int]:
    """env MQTT_HOST/MQTT_PORT, else the Mosquitto `lake mqtt start` runs for this lake, else 127.0.0.1:1884."""
    running = mosquitto.running_mosquitto(settings) if settings.is_local else None
    host = env("MQTT_HOST") or (mosquitto.connect_host(running.host) if running else "127.0.0.1")
    port = env("MQTT_PORT")
    return host, _number("MQTT_PORT", port, int) if port else (running.port if running else mosquitto.DEFAULT_PORT)


def _gateway_url() -> str:
    return env("LAKE_GATEWAY_URL") or "http://127.0.0.1:8000"


def open_sink(sink: str, settings, keys: Optional[Mapping[str, str]] = None):
    """``kafka``, ``mqtt``, ``http`` or ``jsonl:PATH`` -> (a connected sender, its description).

    ``mqtt`` and ``http`` send as each vehicle, with its secret from ``keys``."""
    if sink == "kafka":
        return KafkaSender(settings.bootstrap, settings.topic), f"kafka {settings.topic} at {settings.bootstrap}"
    if sink == "mqtt":
        host, port = _mqtt_address(settings)
        sender = FleetMqttSender(host, port, keys or {}, tls_ca=env("MQTT_CA_FILE"))
        return sender, f"mqtt {host}:{port} telemetry/<vehicle>"
    if sink == "http":
        url = _gateway_url()
        return HttpSender(url, keys or {}), f"http {url}/v1/telemetry"
    if sink.startswith("jsonl:") and len(sink) > len("jsonl:"):
        path = sink[len("jsonl:") :]
        return JsonlSender(path), f"{path}"
    raise ConfigError(f"--sink must be {SINKS_HELP}, got {sink!r}")


def _reachable(what: str, host: str, port: int) -> None:
    """Fail before the fleet is provisioned, not at its first message."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        raise BrokerUnavailableError(f"no {what} answers at {host}:{port} ({exc})") from None


def spool_path(args, settings) -> Optional[str]:
    chosen = args.spool or env("LAKE_SPOOL")
    if chosen:
        return None if chosen == "none" else str(chosen)
    if args.sink not in EDGE_SINKS:
        return None  # a backfill straight into Kafka: the producer's own queue and flush suffice
    if settings.is_local:
        return os.path.join(fs_path(settings.lake_root, settings.paths.local_state), "spool", f"{args.sink}.spool")
    return os.path.abspath(f"{args.sink}.spool")


def device_keys_path(explicit: Optional[str], settings) -> str:
    if explicit:
        return explicit
    if env("LAKE_DEVICE_KEYS"):
        return str(env("LAKE_DEVICE_KEYS"))
    if settings.is_local:
        return os.path.join(fs_path(settings.lake_root, settings.paths.local_state), "fleet_keys.json")
    return os.path.abspath("fleet_keys.json")  # a remote lake: the devices' secrets stay on this machine


def provision_fleet(settings, config, keys_path: str) -> tuple[dict[str, str], int]:
    """Every vehicle of the simulated fleet gets an active credential and its secret in ``keys_path``.

    Vehicles that already have both keep them; the others get a new secret (an old one, if any,
    stops working). Returns the keys and how many were new."""
    fleet = build_fleet(config)
    keys = load_keys(keys_path)
    devices = DeviceStore(settings.lake_root).load()
    # A revoked vehicle stays revoked (an operator decided so): it sends with its old secret, if any,
    # and the edge refuses it. Only vehicles with no usable credential get one.
    need = [
        (vid, vtype)
        for vid, vtype in zip(fleet.vehicle_ids, fleet.type_names)
        if vid not in devices or (devices[vid].active and vid not in keys)
    ]
    if need:
        fresh = DeviceStore(settings.lake_root).add_many(need, rotate=True)
        keys = {**keys, **fresh}
        save_keys(keys_path, keys)
        after_credentials_change(settings)
    revoked = [vid for vid in fleet.vehicle_ids if vid in devices and not devices[vid].active]
    if revoked:
        print(
            f"warning: {len(revoked):,} vehicle(s) of the fleet are revoked ({', '.join(revoked[:5])}): "
            "the edge refuses them (`lake devices add --rotate` re-admits one)",
            file=sys.stderr,
        )
    return {vid: keys.get(vid, "") for vid in fleet.vehicle_ids}, len(need)


def register_fleet(lake_root: str, config):
    """Register the vehicles a simulation of ``config`` sends for, as of its start time.

    Here and not in ``edge_client``: the device side never writes the lake's tables.
    """
    fleet = build_fleet(config)
    return upsert_vehicles(lake_root, fleet.vehicle_ids, fleet.type_names, registered_at_ms=config.start_ms)


def run(args, settings) -> int:
    config = build_config(args)
    keys, provisioned = None, 0
    check_sink(args.sink, settings)  # fails fast, before credentials or the registry are written
    if args.metrics_port is not None and not spool_path(args, settings):
        raise ConfigError("--metrics-port reports the spool: give --spool (mqtt and http have one by default)")
    if args.sink in EDGE_SINKS:
        keys, provisioned = provision_fleet(settings, config, device_keys_path(args.device_keys, settings))
    uplink, where = open_sink(args.sink, settings, keys)
    spool = spool_path(args, settings)
    sender = uplink
    if spool:
        os.makedirs(os.path.dirname(os.path.abspath(spool)), exist_ok=True)
        sender = SpoolingSender(uplink, spool)
        if sender.backlog:
            print(f"spool {spool}: {sender.backlog:,} messages of an earlier run are sent first", file=sys.stderr)
        where += f" via spool {spool}"
        if args.metrics_port is not None:
            serve_spool_metrics(sender, args.metrics_port, args.metrics_host)
    try:
        registry = None if args.no_registry else register_fleet(settings.lake_root, config)
        stats = simulate(config, sender, progress=not args.no_progress)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            sender.close()
        raise
    sender.close()
    registered = "" if registry is None else f"; registry dims/vehicles: {registry}"
    credentials = f"; {provisioned:,} new device credentials" if provisioned else ""
    delivered = f"; gateway: {uplink.summary()}" if isinstance(uplink, HttpSender) else ""
    print(f"{stats.summary()}; to {where}{registered}{credentials}{delivered}")
    return 0
