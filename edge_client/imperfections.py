"""What goes wrong between a vehicle and the broker, at rates the caller sets.

- duplicates: a retry resends the same bytes a few seconds later;
- skewed clocks: a few vehicles report times hours off;
- GPS glitches: a fix reads lat = lon = 0;
- silences: a vehicle loses its uplink for minutes and its messages of that
  time are never sent;
- malformed messages of varied kinds, each refused by
  ``lake_schemas.validate_message`` with the reason in ``MALFORMED_KINDS``.

Its random stream is its own, so turning a rate up or down leaves the
fleet's physics and the well-formed messages as they were.
"""

from __future__ import annotations

import heapq
from typing import Callable

import msgspec
import numpy as np

from edge_client.config import Imperfections
from edge_client.encoding import SIGNAL, SNAPSHOT, Outbox
from lake_schemas import MAX_MESSAGE_BYTES, RejectReason

DUPLICATE = "duplicate"
#: How long a vehicle stays silent: some shorter than the hot path's 10 offline minutes, most longer.
SILENCE_MS = (3 * 60_000, 40 * 60_000)

#: Malformed kind -> the reason validation must give it.
MALFORMED_KINDS: dict[str, RejectReason] = {
    "not_json": RejectReason.NOT_JSON,
    "truncated": RejectReason.NOT_JSON,
    "missing_field": RejectReason.MISSING_FIELD,
    "bad_vehicle_id": RejectReason.INVALID_VEHICLE_ID,
    "unknown_signal": RejectReason.UNKNOWN_SIGNAL,
    "too_large": RejectReason.TOO_LARGE,
    "wrong_type": RejectReason.INVALID_VALUE,
}
_KINDS_FOR_SHAPE = {
    SNAPSHOT: [k for k in MALFORMED_KINDS if k != "unknown_signal"],
    SIGNAL: list(MALFORMED_KINDS),
}
_NOT_JSON = [
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    b"vehicle_id=%s&soc=81.5&lat=52.52",
    b"{'vehicle_id': '%s', 'ts': 1772352000000}",
    b'{"vehicle_id": "%s", "event_id": "e1", "ts": 1772352000000, "battery": {"soc_pct": NaN}}',
]
_BAD_IDS = ["", "V 000123", "V000123;DROP TABLE vehicles", "x" * 70, "V/000123"]
_UNKNOWN_SIGNALS = ["tire_pressure", "SOC", "gps_lat", "cabin_temp"]
_DECODE = msgspec.json.decode
_ENCODE = msgspec.json.encode


class FieldFaults:
    """Injects the imperfections of ``Imperfections`` into a simulation's messages."""

    def __init__(self, rates: Imperfections, seed: int, vehicles: int):
        self.rates = rates
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBAD]))
        skewed = self._rng.random(vehicles) < rates.clock_skew_rate
        hours = self._rng.integers(1, 13, vehicles) * self._rng.choice([-1, 1], vehicles)
        #: Per vehicle: how far its clock is off, in ms (0 for most).
        self.clock_offset_ms = np.where(skewed, hours * 3_600_000, 0).astype(np.int64)
        self._retries: list[tuple[int, int, int, bytes, str]] = []  # heap of (send_ms, seq, vehicle, value, shape)
        self._seq = 0
        # Silences draw from a stream of their own: turning them on changes nothing else.
        self._silence_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5113]))
        self._silent_until_ms = np.zeros(vehicles, dtype=np.int64)
        #: Silences begun so far.
        self.silences = 0

    def silence(self, out: Outbox, now_ms: int, tick_s: float) -> int:
        """Start silences at ``silence_rate`` per vehicle and hour; drop the silent vehicles' messages.

        Returns how many messages were dropped (never sent). Call before ``corrupt``.
        """
        if not self.rates.silence_rate:
            return 0
        quiet = self._silent_until_ms > now_ms
        start = ~quiet & (self._silence_rng.random(len(quiet)) < self.rates.silence_rate * tick_s / 3600.0)
        if start.any():
            k = int(start.sum())
            self._silent_until_ms[start] = now_ms + self._silence_rng.integers(*SILENCE_MS, k)
            self.silences += k
            quiet |= start
        if not quiet.any() or not len(out):
            return 0
        keep = np.flatnonzero(~quiet[np.asarray(out.vehicle, dtype=np.int64)]).tolist()
        dropped = len(out) - len(keep)
        if dropped:
            out.keep(keep)
        return dropped

    @property
    def skewed_vehicles(self) -> int:
        return int(np.count_nonzero(self.clock_offset_ms))

    def gps_glitch_mask(self, vehicles: int) -> np.ndarray:
        """Which vehicles' GPS reads 0,0 this tick."""
        return self._rng.random(vehicles) < self.rates.gps_glitch_rate

    def corrupt(self, out: Outbox) -> None:
        """Replace about ``bad_rate`` of the messages by malformed ones."""
        if not self.rates.bad_rate or not len(out):
            return
        for i in np.flatnonzero(self._rng.random(len(out)) < self.rates.bad_rate).tolist():
            kinds = _KINDS_FOR_SHAPE[out.shape[i]]
            kind = kinds[int(self._rng.integers(len(kinds)))]
            out.value[i] = _MAKERS[kind](self._rng, out.value[i])
            out.defects[i] = kind

    def schedule_retries(self, out: Outbox) -> None:
        """Choose the well-formed messages a retry will send again, a few seconds later."""
        if not self.rates.duplicate_rate or not len(out):
            return
        for i in np.flatnonzero(self._rng.random(len(out)) < self.rates.duplicate_rate).tolist():
            if i in out.defects:
                continue
            delay_ms = int(self._rng.integers(500, 30_000))
            self._seq += 1
            heapq.heappush(
                self._retries, (out.send_ms[i] + delay_ms, self._seq, out.vehicle[i], out.value[i], out.shape[i])
            )

    def add_due_retries(self, out: Outbox, before_ms: float = float("inf")) -> None:
        """Append the retries whose send time comes before ``before_ms``."""
        while self._retries and self._retries[0][0] < before_ms:
            send_ms, _, vehicle, value, shape = heapq.heappop(self._retries)
            out.defects[len(out)] = DUPLICATE
            out.add([vehicle], [value], [send_ms], shape)


# -- the malformed kinds: each takes a well-formed message and spoils it ----------------------------


def _vehicle(doc: dict) -> str:
    return str(doc.get("vehicle_id") or doc.get("did") or "V000000")


def _not_json(rng: np.random.Generator, value: bytes) -> bytes:
    template = _NOT_JSON[int(rng.integers(len(_NOT_JSON)))]
    return template.replace(b"%s", _vehicle(_DECODE(value)).encode()) if b"%s" in template else template


def _truncated(rng: np.random.Generator, value: bytes) -> bytes:
    # Cut anywhere before the closing brace: the connection dropped mid-message.
    return value[: int(rng.integers(1, len(value) - 1))]


def _missing_field(rng: np.random.Generator, value: bytes) -> bytes:
    doc = _DECODE(value)
    required = ["event_id", "vehicle_id", "ts"] if "vehicle_id" in doc else ["timestamp", "name"]
    del doc[required[int(rng.integers(len(required)))]]
    return _ENCODE(doc)


def _bad_vehicle_id(rng: np.random.Generator, value: bytes) -> bytes:
    doc = _DECODE(value)
    doc["vehicle_id" if "vehicle_id" in doc else "did"] = _BAD_IDS[int(rng.integers(len(_BAD_IDS)))]
    return _ENCODE(doc)


def _unknown_signal(rng: np.random.Generator, value: bytes) -> bytes:
    doc = _DECODE(value)
    doc["name"] = _UNKNOWN_SIGNALS[int(rng.integers(len(_UNKNOWN_SIGNALS)))]
    return _ENCODE(doc)


def _too_large(rng: np.random.Generator, value: bytes) -> bytes:
    # A TCU that attaches its whole debug log.
    doc = _DECODE(value)
    doc["debug_dump"] = rng.bytes(MAX_MESSAGE_BYTES // 2 + 64).hex()
    return _ENCODE(doc)


def _wrong_type(rng: np.random.Generator, value: bytes) -> bytes:
    doc = _DECODE(value)
    if "did" in doc and "vehicle_id" not in doc:
        field = "float_value" if "float_value" in doc else "int_value"
        doc[field] = str(doc[field])
    else:
        group, field = [("motion", "speed_kmh"), ("battery", "soc_pct"), ("location", "lat")][int(rng.integers(3))]
        doc[group][field] = f"{doc[group][field]}"
    return _ENCODE(doc)


_MAKERS: dict[str, Callable[[np.random.Generator, bytes], bytes]] = {
    "not_json": _not_json,
    "truncated": _truncated,
    "missing_field": _missing_field,
    "bad_vehicle_id": _bad_vehicle_id,
    "unknown_signal": _unknown_signal,
    "too_large": _too_large,
    "wrong_type": _wrong_type,
}
assert set(_MAKERS) == set(MALFORMED_KINDS)
