"""Downsampling a vehicle's series to at most ``max_points`` real points.

A series is columns of equal length (``SERIES_COLUMNS``): ``t`` (epoch ms,
ascending), ``n`` (events the point stands for: 1 for a Silver event, the
window's ``event_count`` for a hot-store minute), ``soc_min``, ``soc_avg``,
``soc_max``, ``speed_avg``, ``speed_max`` (NaN where unknown).

The rule (min/max selection, like M4): the range ``[start, end)`` is cut
into ``k = (max_points - 2) // 3`` buckets of equal time; from each bucket
the point with the lowest ``soc_min``, the one with the highest ``soc_max``
and the one with the highest ``speed_max`` are kept, plus the series' first
and last points. So every point returned is a point of the input, the first
and last points and the extremes (lowest and highest battery, top speed) are
always there, and at most ``3k + 2 <= max_points`` points come out. The same
selection applied to any superset of a bucket's candidates picks the same
points, which lets Silver pre-select candidates in DuckDB with the same
bucket edges (``bucket_of``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SERIES_COLUMNS", "buckets_for", "bucket_of", "downsample", "empty_series", "concat"]

SERIES_COLUMNS = ("t", "n", "soc_min", "soc_avg", "soc_max", "speed_avg", "speed_max")
Series = dict[str, np.ndarray]


def empty_series() -> Series:
    return {c: np.empty(0, dtype=np.int64 if c in ("t", "n") else np.float64) for c in SERIES_COLUMNS}


def concat(parts: list[Series]) -> Series:
    parts = [p for p in parts if len(p["t"])]
    if not parts:
        return empty_series()
    return {c: np.concatenate([p[c] for p in parts]) for c in SERIES_COLUMNS}


def buckets_for(max_points: int) -> int:
    """How many time buckets a series of at most ``max_points`` points is cut into."""
    return max(1, (max_points - 2) // 3)


def bucket_of(t: np.ndarray, start_ms: int, end_ms: int, buckets: int) -> np.ndarray:
    """The bucket (0 .. buckets-1) of each timestamp in ``[start_ms, end_ms)``."""
    span = max(1, end_ms - start_ms)
    return np.clip((t - start_ms) * buckets // span, 0, buckets - 1)


def _first_per_bucket(bucket: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of the row with the smallest ``key`` in each bucket (NaN keys never win; ties: earliest)."""
    usable = ~np.isnan(key)
    if not usable.any():
        return np.empty(0, dtype=np.int64)
    rows = np.flatnonzero(usable)
    order = rows[np.lexsort((rows, key[rows], bucket[rows]))]  # by bucket, then key, then position
    _, first = np.unique(bucket[order], return_index=True)
    return order[first]


def downsample(series: Series, start_ms: int, end_ms: int, max_points: int) -> Series:
    """At most ``max_points`` points of ``series`` (sorted by ``t``), chosen by the module's rule."""
    size = len(series["t"])
    if size <= max_points:
        return series
    buckets = buckets_for(max_points)
    bucket = bucket_of(series["t"], start_ms, end_ms, buckets)
    keep = np.concatenate(
        [
            np.array([0, size - 1]),
            _first_per_bucket(bucket, series["soc_min"]),
            _first_per_bucket(bucket, -series["soc_max"]),
            _first_per_bucket(bucket, -series["speed_max"]),
        ]
    )
    keep = np.unique(keep)  # sorted: the series' order
    return {c: series[c][keep] for c in SERIES_COLUMNS}
