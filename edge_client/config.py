"""What a simulation run is: typed options, validated when built.

A bad value raises ``EdgeConfigError`` with one line that names the option, so
the CLI and ``lake demo`` report it the same way.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field

from edge_client.errors import EdgeConfigError

#: Message shapes of contract section 1; ``mixed`` gives each vehicle one of the two.
SHAPES = ("snapshot", "signal", "mixed")

DEFAULT_START = "2026-03-01T08:00:00Z"
BERLIN = (52.52, 13.405)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` or a bare number of seconds -> seconds."""
    match = _DURATION_RE.match(str(text))
    if match is None:
        raise EdgeConfigError(f"bad duration {text!r}: use a number with s, m, h or d (e.g. 90s, 30m, 2h)")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise EdgeConfigError(f"bad duration {text!r}: it must be more than zero")
    return seconds


def parse_start(text: str) -> int:
    """An RFC 3339 time with ``Z`` or an offset (a date alone means midnight UTC) -> epoch ms."""
    try:
        parsed = _dt.datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise EdgeConfigError(f"bad start time {text!r}: use RFC 3339, e.g. {DEFAULT_START}") from None
    if parsed.tzinfo is None:
        if len(str(text).strip()) > 10:  # a time without a zone would be a guess
            raise EdgeConfigError(f"bad start time {text!r}: give a zone, e.g. {DEFAULT_START}")
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise EdgeConfigError(f"{name} must be between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class Imperfections:
    """How often the field gets things wrong. Each rate is a probability in [0, 1]."""

    #: Per well-formed message: a retry resends the same bytes a few seconds later.
    duplicate_rate: float = 0.001
    #: Per vehicle: its clock is hours off, so its event times are wrong.
    clock_skew_rate: float = 0.002
    #: Per position report: the GPS returns lat = lon = 0.
    gps_glitch_rate: float = 0.0005
    #: Per message: it is replaced by a malformed one (not JSON, truncated, ...).
    bad_rate: float = 0.0
    #: Per vehicle and hour: it loses its uplink (a dead zone, a modem that hangs) for 3 to 40 minutes and
    #: what it measures meanwhile is lost; past 10 minutes the hot path calls it ``offline``.
    silence_rate: float = 0.0

    def __post_init__(self) -> None:
        _check_rate("duplicate rate", self.duplicate_rate)
        _check_rate("clock skew rate", self.clock_skew_rate)
        _check_rate("GPS glitch rate", self.gps_glitch_rate)
        _check_rate("bad rate", self.bad_rate)
        _check_rate("silence rate", self.silence_rate)

    @classmethod
    def none(cls) -> "Imperfections":
        """A perfect world: every message well formed, sent once, on time."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SimulationConfig:
    """A fleet in simulated time: ``vehicles`` report ``rate_hz`` times a second
    from ``start_ms`` for ``duration_s`` seconds."""

    vehicles: int = 100
    duration_s: float = 3600.0
    rate_hz: float = 1.0
    start_ms: int = field(default_factory=lambda: parse_start(DEFAULT_START))
    shape: str = "snapshot"
    seed: int = 42
    city_lat: float = BERLIN[0]
    city_lon: float = BERLIN[1]
    imperfections: Imperfections = field(default_factory=Imperfections)
    #: Pace ticks on the wall clock instead of sending as fast as the sink takes it.
    realtime: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.vehicles, int) or not 1 <= self.vehicles <= 10_000_000:
            raise EdgeConfigError(f"vehicles must be a whole number from 1 to 10,000,000, got {self.vehicles!r}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise EdgeConfigError(f"duration must be more than zero seconds, got {self.duration_s!r}")
        if not (math.isfinite(self.rate_hz) and 0.001 <= self.rate_hz <= 100):
            raise EdgeConfigError(f"rate must be from 0.001 to 100 events per second per vehicle, got {self.rate_hz!r}")
        if self.shape not in SHAPES:
            raise EdgeConfigError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise EdgeConfigError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if not (-80 <= self.city_lat <= 80 and -180 <= self.city_lon <= 180):
            raise EdgeConfigError(f"city centre ({self.city_lat}, {self.city_lon}) is not a place vehicles can drive")
        if not 946_684_800_000 <= self.start_ms < 4_102_444_800_000 - self.duration_s * 1000:
            raise EdgeConfigError("start time must be between the years 2000 and 2100")

    @property
    def tick_ms(self) -> int:
        """Simulated milliseconds between two reports of one vehicle."""
        return max(1, round(1000.0 / self.rate_hz))

    @property
    def ticks(self) -> int:
        return max(1, math.ceil(self.duration_s * 1000.0 / self.tick_ms))
