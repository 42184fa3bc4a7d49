"""SQL pieces both DuckDB baselines share: geohash, haversine, timestamps.

Every threshold comes from ``lake_schemas.rules`` (as the jobs take them),
so the baselines cannot drift from the contract by a typo.
"""

from __future__ import annotations

from lake_schemas.geohash import BASE32
from lake_schemas.rules import EARTH_RADIUS_KM

__all__ = ["geohash_stages", "haversine_km_sql", "connect", "quote"]


def connect(threads: int = 0):
    """An in-memory DuckDB; times are UTC whatever the machine's zone."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def quote(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _cell(value: str, low: float, span: float, bits: int) -> tuple[str, str]:
    """The bisection cell of ``value`` in two projections: a first guess, then its exact correction.

    Geohash bisects [low, low + span] ``bits`` times; the cell edges
    ``low + k * span / 2**bits`` are exact in binary floating point, so
    comparing with them gives what the literal bisection gives, also on an
    edge (where ``floor((value - low) / width)`` alone can round wrongly).
    """
    n = 1 << bits
    width = f"({span!r} / {n})"
    guess = f"least(greatest(CAST(floor(({value} - {low!r}) / {width}) AS BIGINT), 0), {n - 1})"

    def edge(k: str) -> str:
        return f"({low!r} + ({k}) * {width})"

    fixed = (
        f"least(greatest(_k + CASE WHEN {value} >= {edge('_k + 1')} THEN 1 "
        f"WHEN {value} < {edge('_k')} THEN -1 ELSE 0 END, 0), {n - 1})"
    )
    return guess, fixed


def geohash_stages(lat: str, lon: str, precision: int, valid: str) -> tuple[str, str, str]:
    """Three projections (SELECT-list items) that end in ``zone_id``: cells, corrected cells, characters.

    Use as ``SELECT *, {cells} FROM t``, then ``SELECT * REPLACE ({corrected})``, then
    ``SELECT * EXCLUDE (_gx, _gy), {characters}``: each reads only the columns the
    previous one made, so no expression is repeated many times over. ``valid``
    is a SQL condition; where it is false ``zone_id`` is null. (DuckDB's
    ``least``/``greatest`` skip NULLs, hence the explicit CASEs.)
    """
    total = 5 * precision
    lon_bits, lat_bits = (total + 1) // 2, total // 2  # longitude takes the first bit
    gx, fix_x = _cell(lon, -180.0, 360.0, lon_bits)
    gy, fix_y = _cell(lat, -90.0, 180.0, lat_bits)
    cells = f"CASE WHEN {valid} THEN {gx} END AS _gx, CASE WHEN {valid} THEN {gy} END AS _gy"
    corrected = (
        f"CASE WHEN _gx IS NOT NULL THEN {fix_x.replace('_k', '_gx')} END AS _gx, "
        f"CASE WHEN _gy IS NOT NULL THEN {fix_y.replace('_k', '_gy')} END AS _gy"
    )

    def bit(i: int) -> str:  # the i-th interleaved bit, most significant first
        if i % 2 == 0:
            return f"((_gx >> {lon_bits - 1 - i // 2}) & 1)"
        return f"((_gy >> {lat_bits - 1 - i // 2}) & 1)"

    chars = []
    for c in range(precision):
        index = " + ".join(f"({bit(5 * c + t)} << {4 - t})" for t in range(5))
        chars.append(f"substr('{BASE32}', 1 + CAST({index} AS INTEGER), 1)")
    characters = f"CASE WHEN _gx IS NOT NULL THEN {' || '.join(chars)} END AS zone_id"
    return cells, corrected, characters


def haversine_km_sql(lat1: str, lon1: str, lat2: str, lon2: str) -> str:
    """``lake_schemas.rules.haversine_km`` in SQL (same formula, same radius, same clipping)."""
    a = (
        f"pow(sin((radians({lat2}) - radians({lat1})) / 2), 2) + cos(radians({lat1})) * cos(radians({lat2})) * "
        f"pow(sin(radians({lon2} - {lon1}) / 2), 2)"
    )
    return f"(2 * {EARTH_RADIUS_KM!r} * asin(sqrt(least(greatest({a}, 0.0), 1.0))))"
