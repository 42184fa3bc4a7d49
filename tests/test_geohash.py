"""The vectorized geohash encoder against published values and the textbook algorithm."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lake_schemas.geohash import BASE32, encode, encode_arrow


def textbook(lat: float, lon: float, precision: int) -> str:
    """Niemeyer's encoder, one bit at a time (the reference)."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    bits, out, even = [], [], True
    while len(out) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            bits.append(lon >= mid)
            lon_lo, lon_hi = (mid, lon_hi) if lon >= mid else (lon_lo, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            bits.append(lat >= mid)
            lat_lo, lat_hi = (mid, lat_hi) if lat >= mid else (lat_lo, mid)
        even = not even
        if len(bits) == 5:
            out.append(BASE32[int("".join("1" if b else "0" for b in bits), 2)])
            bits = []
    return "".join(out)


@pytest.mark.parametrize(
    "lat, lon, precision, expected",
    [
        (42.6, -5.6, 5, "ezs42"),  # Wikipedia's example
        (57.64911, 10.40744, 11, "u4pruydqqvj"),  # geohash.org's example
        (52.52, 13.405, 6, "u33dc0"),  # Berlin
        (-33.8688, 151.2093, 6, "r3gx2f"),  # Sydney
        (40.6892, -74.0445, 7, "dr5r7p4"),  # Statue of Liberty
        (0.0, 0.0, 6, "s00000"),
        (-90.0, -180.0, 6, "000000"),
        (90.0, 180.0, 6, "zzzzzz"),
    ],
)
def test_known_values(lat, lon, precision, expected):
    assert encode([lat], [lon], precision)[0] == expected
    assert textbook(lat, lon, precision) == expected


def test_matches_the_textbook_encoder_everywhere_including_cell_edges():
    rng = np.random.default_rng(7)
    lat = np.concatenate([rng.uniform(-90, 90, 2000), np.linspace(-90, 90, 181)])
    lon = np.concatenate([rng.uniform(-180, 180, 2000), np.linspace(-180, 180, 181)])
    got = encode(lat, lon, 6)
    assert list(got) == [textbook(a, b, 6) for a, b in zip(lat.tolist(), lon.tolist())]


def test_arrow_result_is_null_where_not_valid():
    lat = pa.array([57.64911, None, 0.0, 42.6])
    lon = pa.array([10.40744, 13.0, 0.0, -5.6])
    valid = pa.array([True, False, False, True])
    assert encode_arrow(lat, lon, valid, 6).to_pylist() == ["u4pruy", None, None, "ezs42e"]
    empty = pa.array([], pa.float64())
    assert encode_arrow(empty, empty, pa.array([], pa.bool_()), 6).to_pylist() == []


def test_precision_is_checked():
    with pytest.raises(ValueError):
        encode([0.0], [0.0], 13)
