"""Token buckets: the gateway's per-device message rate and its budgets for failed authentication.

One bucket per key (a vehicle id, a client address), created full on first
use. ``take(key, n)`` either takes ``n`` tokens and returns 0, or takes
nothing and returns the seconds until ``n`` tokens will be there. Memory is
bounded: past ``max_keys`` keys, the buckets that have refilled (idle keys,
indistinguishable from new ones) are dropped.

Each gateway worker keeps its own buckets: a device on one keep-alive
connection is held to the rate; one that spreads its requests over the
workers' connections can get up to ``workers`` times it.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["TokenBuckets"]


class TokenBuckets:
    def __init__(self, rate: float, burst: float, max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got rate {rate}, burst {burst})")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, time of that count]

    def _tokens(self, key: str, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = [self.burst, now]
        elif bucket[0] < self.burst:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        else:
            bucket[1] = now
        return bucket

    def available(self, key: str) -> float:
        return self._tokens(key, self._clock())[0]

    def take(self, key: str, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0.0 when granted, else the seconds until they will be there (nothing taken)."""
        bucket = self._tokens(key, self._clock())
        if bucket[0] >= n:
            bucket[0] -= n
            return 0.0
        return (n - bucket[0]) / self.rate

    def refund(self, key: str, n: float) -> None:
        """Give back tokens taken for work that was not done (a batch Kafka did not take)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + n)

    def _prune(self, now: float) -> None:
        idle = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # every key busy: forget the longest-idle half
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for key in by_age[: len(by_age) // 2]:
                del self._buckets[key]
