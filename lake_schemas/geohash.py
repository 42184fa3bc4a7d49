"""Geohash encoding, vectorized (Silver's ``zone_id``, contract section 3).

The standard algorithm (Niemeyer's geohash.org): bisect longitude and
latitude alternately, longitude first, one bit per step, five bits per
base-32 character. The bisection is done literally on whole arrays, so a
point on a cell edge gets the same character as the textbook encoder gives
it (a closed-form ``floor((lon + 180) / 360 * 2**n)`` rounds differently on
some edges).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike

__all__ = ["BASE32", "encode", "encode_arrow"]

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_ALPHABET = np.frombuffer(BASE32.encode(), dtype=np.uint8)


def _bisect(values: np.ndarray, low: float, high: float, bits: int) -> np.ndarray:
    """The ``bits`` bisection bits of ``values`` in [low, high], most significant first, as an integer."""
    lo = np.full(values.shape, low)
    hi = np.full(values.shape, high)
    code = np.zeros(values.shape, dtype=np.int64)
    for _ in range(bits):
        mid = (lo + hi) / 2
        upper = values >= mid
        code = (code << 1) | upper
        lo = np.where(upper, mid, lo)
        hi = np.where(upper, hi, mid)
    return code


def _chars(lat: np.ndarray, lon: np.ndarray, precision: int) -> np.ndarray:
    """The geohash characters of each point as a ``(n, precision)`` uint8 matrix."""
    if not 1 <= precision <= 12:
        raise ValueError(f"geohash precision must be 1..12, not {precision}")
    total = 5 * precision
    lon_bits, lat_bits = (total + 1) // 2, total // 2  # longitude takes the first bit, then every other one
    lon_code = _bisect(lon, -180.0, 180.0, lon_bits)
    lat_code = _bisect(lat, -90.0, 90.0, lat_bits)
    code = np.zeros(lat.shape, dtype=np.int64)
    for i in range(total):
        source, width = (lon_code, lon_bits) if i % 2 == 0 else (lat_code, lat_bits)
        code = (code << 1) | ((source >> (width - 1 - i // 2)) & 1)
    shifts = np.arange(precision - 1, -1, -1, dtype=np.int64) * 5
    return _ALPHABET[(code[:, None] >> shifts) & 31]


def encode(lat: ArrayLike, lon: ArrayLike, precision: int) -> np.ndarray:
    """Geohashes of the points ``(lat, lon)`` as a numpy array of strings.

    Inputs must be finite and within [-90, 90] x [-180, 180]; callers mask
    out missing or invalid positions first.
    """
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    chars = _chars(lat, lon, precision)
    return np.ascontiguousarray(chars).view(f"S{precision}").reshape(-1).astype(f"U{precision}")


def encode_arrow(lat: pa.Array, lon: pa.Array, valid: pa.Array, precision: int) -> pa.Array:
    """An Arrow string array: the geohash where ``valid`` is true, null elsewhere.

    Built straight from the character matrix (no Python string per row).
    """
    n = len(lat)
    mask = np.asarray(valid.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    la = np.where(mask, lat.fill_null(0.0).to_numpy(zero_copy_only=False), 0.0)
    lo = np.where(mask, lon.fill_null(0.0).to_numpy(zero_copy_only=False), 0.0)
    chars = np.ascontiguousarray(_chars(la, lo, precision))
    offsets = np.arange(n + 1, dtype=np.int32) * precision
    validity = pa.array(mask, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(
        pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(chars)], null_count=int(n - mask.sum())
    )
