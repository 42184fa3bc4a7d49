"""The messages a simulation sends: both shapes, imperfections, the CLI."""

from __future__ import annotations

import collections
import json
import re
import time

import msgspec
import pytest

from edge_client.config import (
    Imperfections,
    SimulationConfig,
    parse_duration,
    parse_start,
)
from edge_client.encoding import rfc3339_ms
from edge_client.errors import EdgeConfigError as ConfigError
from edge_client.imperfections import DUPLICATE, MALFORMED_KINDS
from edge_client.senders import CollectingSender, read_jsonl
from edge_client.simulate import message_batches, simulate
from lake.cli import main
from lake_schemas import Accepted, Refused, validate_message
from lake_schemas.messages import SIGNAL_COLUMNS, Signal, Snapshot

START_MS = 1_772_352_000_000  # 2026-03-01T08:00:00Z
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PERFECT = Imperfections.none()
ROUGH = Imperfections(duplicate_rate=0.01, clock_skew_rate=0.05, gps_glitch_rate=0.01, bad_rate=0.02)


def messages(config):
    """Every message of a run, flattened: (key, value, timestamp_ms, defect or None)."""
    out = []
    for batch in message_batches(config):
        for i, (k, v, t) in enumerate(zip(batch.keys, batch.values, batch.timestamps_ms)):
            out.append((k, v, t, batch.defects.get(i)))
    return out


def config(**kw):
    base = dict(vehicles=40, duration_s=600, start_ms=START_MS, seed=11, imperfections=PERFECT)
    base.update(kw)
    return SimulationConfig(**base)


@pytest.mark.parametrize("shape", ["snapshot", "signal", "mixed"])
def test_every_message_is_classified_as_intended(shape):
    msgs = messages(config(vehicles=100, shape=shape, imperfections=ROUGH))
    kinds = collections.Counter()
    for key, value, _, defect in msgs:
        verdict = validate_message(value)
        if defect in MALFORMED_KINDS:
            assert isinstance(verdict, Refused), (defect, value[:200])
            assert verdict.reason == MALFORMED_KINDS[defect], (defect, verdict, value[:200])
        else:
            assert isinstance(verdict, Accepted), (defect, verdict, value[:200])
            assert verdict.vehicle_id.encode() == key
            assert verdict.shape == (shape if shape != "mixed" else verdict.shape)
        kinds[defect] += 1
    expected = set(MALFORMED_KINDS) - ({"unknown_signal"} if shape == "snapshot" else set())
    assert expected <= set(kinds), kinds  # every malformed kind shows up
    assert kinds[DUPLICATE] > 0
    assert 0.01 < sum(kinds[k] for k in MALFORMED_KINDS) / len(msgs) < 0.03


def test_snapshots_one_per_vehicle_per_tick_and_consistent():
    cfg = config(shape="snapshot", duration_s=300)
    msgs = messages(cfg)
    assert len(msgs) == cfg.vehicles * cfg.ticks
    decode = msgspec.json.Decoder(Snapshot).decode
    event_ids = set()
    per_vehicle = collections.Counter()
    for key, value, send_ms, _ in msgs:
        snap = decode(value)
        assert snap.schema_version == 1 and snap.vehicle_id.encode() == key
        assert UUID.match(snap.event_id)
        event_ids.add(snap.event_id)
        assert RFC3339_MS.match(snap.ts)
        event_ms = validate_message(value).event_ts_ms
        assert 0 < send_ms - event_ms < 5000  # sent shortly after it was measured
        st, bat, mot = snap.status, snap.battery, snap.motion
        assert st.in_use == st.ignition == (not st.locked)
        assert (st.trip_id is not None) == st.in_use
        assert not (bat.charging and st.in_use)
        assert 0 <= bat.soc_pct <= 100
        assert mot.speed_kmh == 0 or st.in_use
        assert (bat.current_a > 0) == bool(bat.charging) or st.in_use  # charging current flows in
        per_vehicle[key] += 1
    assert len(event_ids) == len(msgs)
    assert set(per_vehicle.values()) == {cfg.ticks}


def test_signals_are_one_per_message_and_sent_sparingly():
    cfg = config(shape="signal", duration_s=900)
    msgs = messages(cfg)
    decode = msgspec.json.Decoder(Signal).decode
    by_vehicle = collections.defaultdict(lambda: collections.defaultdict(list))
    for key, value, _, _ in msgs:
        sig = decode(value)
        assert sig.did.encode() == key and sig.name in SIGNAL_COLUMNS
        assert (sig.float_value is None) != (sig.int_value is None)
        by_vehicle[key][sig.name].append((sig.timestamp, sig.float_value if sig.int_value is None else sig.int_value))
    assert len(by_vehicle) == cfg.vehicles
    assert len(msgs) < cfg.vehicles * cfg.ticks * 3  # a snapshot run sends 9 groups per tick
    moved = 0
    for vehicle, signals in by_vehicle.items():
        # After the first tick, which reports everything, each signal keeps its period.
        soc = [t for t, _ in signals["soc"][1:]]
        assert {b - a for a, b in zip(soc, soc[1:])} == {30_000}, vehicle
        odometer_ts = [t for t, _ in signals["odometer"][1:]]
        assert {b - a for a, b in zip(odometer_ts, odometer_ts[1:])} == {60_000}
        assert len(signals["battery_temp"]) == len(signals["odometer"])
        assert [t for t, _ in signals["lat"]] == [t for t, _ in signals["lon"]]  # one fix, two messages
        odometer = [v for _, v in signals["odometer"]]
        assert odometer == sorted(odometer)
        ignition = [v for _, v in signals["ignition"]]
        assert all(a != b for a, b in zip(ignition, ignition[1:]))  # sent on change only
        assert set(ignition) <= {0, 1}
        if 1 in ignition:
            moved += 1
            assert len(signals["lat"]) > 60  # every tick while in use
    assert moved > 5


def test_mixed_gives_each_vehicle_one_shape():
    msgs = messages(config(shape="mixed", vehicles=60, duration_s=120))
    shapes = collections.defaultdict(set)
    for key, value, _, _ in msgs:
        shapes[key].add(validate_message(value).shape)
    assert all(len(s) == 1 for s in shapes.values())
    counts = collections.Counter(next(iter(s)) for s in shapes.values())
    assert counts["snapshot"] > 15 and counts["signal"] > 15


def test_same_seed_same_messages_other_seed_others():
    a = messages(config(shape="mixed", duration_s=120, imperfections=ROUGH))
    b = messages(config(shape="mixed", duration_s=120, imperfections=ROUGH))
    c = messages(config(shape="mixed", duration_s=120, imperfections=ROUGH, seed=12))
    assert a == b
    assert a != c


def test_imperfection_rates_do_not_change_the_physics():
    clean = [v for _, v, _, d in messages(config(shape="signal", duration_s=120))]
    rough = [
        v
        for _, v, _, d in messages(config(shape="signal", duration_s=120, imperfections=Imperfections(0.05, 0, 0, 0)))
        if d is None
    ]
    assert clean == rough  # duplicates come on top; the originals are the same bytes


def test_duplicates_resend_the_same_bytes_later():
    msgs = messages(config(shape="snapshot", imperfections=Imperfections(0.02, 0, 0, 0)))
    first_sent = {}
    duplicates = 0
    for key, value, ts, defect in msgs:
        if defect == DUPLICATE:
            duplicates += 1
            assert value in first_sent
            orig_key, orig_ts = first_sent[value]
            assert orig_key == key and 500 <= ts - orig_ts <= 30_000
        else:
            assert value not in first_sent
            first_sent[value] = (key, ts)
    assert duplicates > 100


def test_skewed_clocks_are_hours_off_and_gps_glitches_read_zero():
    rates = Imperfections(0, clock_skew_rate=0.2, gps_glitch_rate=0.02, bad_rate=0)
    sender = CollectingSender()
    stats = simulate(config(shape="snapshot", imperfections=rates), sender, progress=False)
    assert stats.skewed_vehicles > 3
    offsets = collections.defaultdict(set)
    zeros = 0
    for value, send_ms in zip(sender.values, sender.timestamps_ms):
        snap = msgspec.json.decode(value, type=Snapshot)
        skew_h = round((validate_message(value).event_ts_ms - send_ms) / 3_600_000)
        offsets[snap.vehicle_id].add(skew_h)
        zeros += snap.location.lat == 0 and snap.location.lon == 0
    skewed = {v: s for v, s in offsets.items() if s != {0}}
    assert len(skewed) == stats.skewed_vehicles
    assert all(len(s) == 1 and 1 <= abs(next(iter(s))) <= 12 for s in skewed.values())
    assert zeros == stats.gps_glitches > 20


def test_simulate_counts_what_it_sends_and_flushes():
    sender = CollectingSender()
    cfg = config(shape="mixed", imperfections=ROUGH)
    stats = simulate(cfg, sender, progress=False)
    assert stats.messages == len(sender.values)
    assert stats.by_shape["snapshot"] > 0 and stats.by_shape["signal"] > 0
    assert stats.bad > 0 and stats.duplicates > 0
    assert stats.ticks == cfg.ticks and stats.vehicles == cfg.vehicles
    assert sender.flushes == 1 and not sender.closed
    assert min(sender.timestamps_ms) >= START_MS
    assert max(sender.timestamps_ms) <= START_MS + cfg.duration_s * 1000 + 31_000
    assert stats.first_timestamp_ms == min(sender.timestamps_ms)
    assert "malformed" in stats.summary()


def test_rate_sets_reports_per_second():
    cfg = config(shape="snapshot", vehicles=5, duration_s=60, rate_hz=4.0)
    assert cfg.tick_ms == 250 and cfg.ticks == 240
    assert len(messages(cfg)) == 5 * 240


def test_realtime_paces_ticks_on_the_clock():
    cfg = config(vehicles=3, duration_s=2, rate_hz=2.0, realtime=True)
    started = time.monotonic()
    simulate(cfg, CollectingSender(), progress=False)
    assert 1.4 <= time.monotonic() - started < 4


def test_config_parsing_and_validation():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration("1.5h") == 5400 and parse_duration("45") == 45
    for bad in ("2x", "0s", "-1h", "", "h"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    assert parse_start("2026-03-01T08:00:00Z") == START_MS
    assert parse_start("2026-03-01T09:00:00+01:00") == START_MS
    for bad in ("2026-03-01T08:00:00", "yesterday"):
        with pytest.raises(ConfigError):
            parse_start(bad)
    for kw in ({"vehicles": 0}, {"duration_s": 0}, {"rate_hz": 0}, {"shape": "xml"}, {"seed": -1}):
        with pytest.raises(ConfigError):
            config(**kw)
    with pytest.raises(ConfigError):
        Imperfections(bad_rate=1.5)
    assert rfc3339_ms(START_MS + 250) == "2026-03-01T08:00:00.250Z"


def test_cli_simulate_to_jsonl(tmp_path, lake_root, capsys):
    out = tmp_path / "sim" / "out.jsonl"
    code = main(
        [
            "simulate",
            "--vehicles",
            "12",
            "--duration",
            "3m",
            "--shape",
            "mixed",
            "--seed",
            "3",
            "--sink",
            f"jsonl:{out}",
            "--lake-root",
            lake_root,
            "--bad-rate",
            "0.01",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "from 12 vehicles over 3m" in summary[0]
    records = list(read_jsonl(out))
    assert f"sent {len(records):,} messages" in summary[0]
    keys = {k for k, _, _ in records}
    assert keys == {f"V{i:06d}".encode() for i in range(12)}
    assert all(START_MS <= t <= START_MS + 3 * 60_000 + 31_000 for _, _, t in records)
    refused = sum(isinstance(validate_message(v), Refused) for _, v, _ in records)
    assert 0 < refused < len(records) * 0.05
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"key", "timestamp_ms", "value"} and isinstance(first["value"], str)


@pytest.mark.parametrize(
    "flags",
    [
        ["--duration", "2x"],
        ["--duration", "0m"],
        ["--vehicles", "0"],
        ["--vehicles", "ten"],
        ["--rate", "fast"],
        ["--start", "tomorrow"],
        ["--sink", "ftp://x"],
        ["--sink", "jsonl:"],
        ["--bad-rate", "2"],
        ["--seed", "-3"],
    ],
)
def test_cli_simulate_bad_values_exit_2_with_one_line(flags, tmp_path, capsys):
    code = main(["simulate", "--sink", f"jsonl:{tmp_path / 'x.jsonl'}", "--lake-root", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("lake: error: ")


def test_cli_simulate_unknown_flag_or_shape_exits_2(capsys):
    for argv in (["simulate", "--shape", "xml"], ["simulate", "--vehicels", "3"]):
        assert main(argv) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_signal_gps_glitches_send_zero_for_both_coordinates():
    sender = CollectingSender()
    rates = Imperfections(0, 0, gps_glitch_rate=0.05, bad_rate=0)
    stats = simulate(config(shape="signal", imperfections=rates), sender, progress=False)
    zero = collections.Counter()
    for value in sender.values:
        sig = msgspec.json.decode(value, type=Signal)
        if sig.name in ("lat", "lon") and sig.float_value == 0.0:
            zero[(sig.did, sig.timestamp, sig.name)] += 1
    lats = {(d, t) for d, t, n in zero if n == "lat"}
    lons = {(d, t) for d, t, n in zero if n == "lon"}
    assert lats == lons  # a glitch spoils the whole fix, never half of it
    assert len(lats) == stats.gps_glitches > 20


def test_silences_drop_whole_minutes_of_a_vehicle_and_are_counted():
    """An uplink loss: the vehicle's messages stop for 3 to 40 minutes, then come again; nothing else changes."""
    from edge_client.imperfections import SILENCE_MS
    from edge_client.simulate import SimulationStats

    quiet = Imperfections(0, 0, 0, 0, silence_rate=0.5)
    stats = SimulationStats()
    sent = collections.defaultdict(list)
    for batch in message_batches(config(shape="snapshot", vehicles=30, duration_s=7200, imperfections=quiet), stats):
        for key, value in zip(batch.keys, batch.values):
            sent[key].append(msgspec.json.decode(value)["ts"])
    baseline = messages(config(shape="snapshot", vehicles=30, duration_s=7200))
    assert stats.silences > 10 and stats.silenced > 0
    assert sum(len(ts) for ts in sent.values()) + stats.silenced == len(baseline)
    gaps = []
    for stamps in sent.values():
        ms = sorted(parse_start(t) for t in stamps)
        gaps += [b - a for a, b in zip(ms, ms[1:]) if b - a > 1000]
    assert gaps, "some vehicle went silent"
    assert all(SILENCE_MS[0] <= g <= SILENCE_MS[1] * 2 + 1000 for g in gaps), gaps
    assert sum(g > 10 * 60_000 for g in gaps) >= 5, "enough of them last past the hot path's offline time"
    # The silenced run sends a subset of the same messages: the fleet's physics did not move.
    assert {v for _, v, _, _ in baseline} >= {
        v
        for b in message_batches(config(shape="snapshot", vehicles=30, duration_s=600, imperfections=quiet))
        for v in b.values
    }


def test_a_few_motorway_trips_leave_the_default_operating_area():
    """The demo's fleet (200 vehicles, 2 h) must make the hot path's geofence rule fire a few times."""
    from edge_client.fleet import Fleet
    from lake_schemas.geofence import default_area

    fleet, area = Fleet(200, 42, START_MS), default_area()
    left = set()
    for _ in range(7200):
        fleet.step()
        if _ % 30 == 0:
            lat, lon = fleet.lat.tolist(), fleet.lon.tolist()
            left |= {i for i in range(fleet.size) if not area.contains(lat[i], lon[i])}
    assert 2 <= len(left) <= 10, left
    # Mostly cars on the motorway (a scooter living at the area's edge may cross it too).
    assert sum(fleet.type_names[i] == "car" and fleet.max_speed_kmh[i] > 100 for i in left) >= 2
