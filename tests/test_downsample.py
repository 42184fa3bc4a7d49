"""The read API's downsampling rule (``lake.read_api.downsample``) on random series."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lake.read_api.downsample import SERIES_COLUMNS, downsample


def _series(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    soc = rng.uniform(0, 100, n)
    speed = rng.uniform(0, 80, n)
    return {
        "t": np.sort(rng.choice(10_000_000, n, replace=False)).astype(np.int64),
        "n": np.ones(n, dtype=np.int64),
        "soc_min": soc,
        "soc_avg": soc,
        "soc_max": soc,
        "speed_avg": speed,
        "speed_max": np.where(rng.uniform(size=n) < 0.1, np.nan, speed),
    }


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), max_points=st.integers(10, 400), seed=st.integers(0, 2**32 - 1))
def test_downsample_rule(n, max_points, seed):
    series = _series(n, seed)
    out = downsample(series, 0, 10_000_000, max_points)
    size = len(out["t"])
    assert size <= max(max_points, n if n <= max_points else 0) and size == min(size, n)
    assert out["t"][0] == series["t"][0] and out["t"][-1] == series["t"][-1]
    assert out["soc_min"].min() == series["soc_min"].min() and out["soc_max"].max() == series["soc_max"].max()
    if not np.isnan(series["speed_max"]).all():
        assert np.nanmax(out["speed_max"]) == np.nanmax(series["speed_max"])
    assert set(SERIES_COLUMNS) == set(out) and np.all(np.diff(out["t"]) > 0)
