"""Operating areas (contract section 9): GeoJSON polygons and point-in-polygon.

Written here, with no geometry library, so the hot path (``lake stream``)
and any batch job that wants the same flag apply one rule. A point is inside
an area when it is inside its outer ring and outside each of its holes
(even-odd ray casting; a point exactly on an edge counts as inside). Each
polygon keeps its bounding box, so a point far away costs four comparisons.

``LAKE_GEOFENCE`` names a GeoJSON file (a Polygon, MultiPolygon, Feature or
FeatureCollection of those); without it the default area is the simulator's
city: a 32-sided polygon of radius ``DEFAULT_RADIUS_KM`` around Berlin's
centre, where the simulated fleet lives (homes scatter a few kilometres
around it; a car on the motorway can leave it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

__all__ = [
    "DEFAULT_CENTER",
    "DEFAULT_RADIUS_KM",
    "GeofenceError",
    "OperatingArea",
    "default_area",
    "load_area",
    "parse_geojson",
]

DEFAULT_CENTER = (52.52, 13.405)  # the simulator's city (edge_client.config.BERLIN)
DEFAULT_RADIUS_KM = 20.0
_EARTH_KM = 6371.0088

Ring = tuple[tuple[float, float], ...]  # (lon, lat) pairs, GeoJSON's order


class GeofenceError(ValueError):
    """A GeoJSON document that is not an area (a user's file: one clear line)."""


def _inside_ring(lon: float, lat: float, ring: Ring) -> bool:
    inside = False
    n = len(ring)
    j = n - 1
    for i in range(n):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat):
            x_cross = xi + (lat - yi) * (xj - xi) / (yj - yi)
            if lon == x_cross:
                return True  # on the edge
            if lon < x_cross:
                inside = not inside
        elif yi == yj == lat and min(xi, xj) <= lon <= max(xi, xj):
            return True  # on a horizontal edge
        j = i
    return inside


_GRID = 64  # cells per side of a polygon's bounding box


@dataclass(frozen=True)
class _Polygon:
    outer: Ring
    holes: tuple[Ring, ...]
    bbox: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat
    #: Per grid cell: True/False when no edge comes near it (the whole cell is inside/outside), None otherwise.
    cells: tuple = ()

    def contains(self, lon: float, lat: float) -> bool:
        x0, y0, x1, y1 = self.bbox
        if not (x0 <= lon <= x1 and y0 <= lat <= y1):
            return False
        if self.cells:
            i = min(int((lon - x0) / (x1 - x0) * _GRID), _GRID - 1) if x1 > x0 else 0
            j = min(int((lat - y0) / (y1 - y0) * _GRID), _GRID - 1) if y1 > y0 else 0
            known = self.cells[j * _GRID + i]
            if known is not None:
                return bool(known)
        return self._ray_cast(lon, lat)

    def _ray_cast(self, lon: float, lat: float) -> bool:
        if not _inside_ring(lon, lat, self.outer):
            return False
        return not any(_inside_ring(lon, lat, h) for h in self.holes)


def _with_grid(p: _Polygon) -> _Polygon:
    """``p`` with its grid: a cell no edge's bounding box touches is wholly inside or outside, so its
    centre answers for every point in it (exact, and a point lookup instead of a ray cast)."""
    x0, y0, x1, y1 = p.bbox
    if not (x1 > x0 and y1 > y0):
        return p
    w, h = (x1 - x0) / _GRID, (y1 - y0) / _GRID
    near: set[tuple[int, int]] = set()
    for ring in (p.outer, *p.holes):
        for (ax, ay), (bx, by) in zip(ring, ring[1:] + ring[:1]):
            i0 = max(int((min(ax, bx) - x0) / w) - 1, 0)
            i1 = min(int((max(ax, bx) - x0) / w) + 1, _GRID - 1)
            j0 = max(int((min(ay, by) - y0) / h) - 1, 0)
            j1 = min(int((max(ay, by) - y0) / h) + 1, _GRID - 1)
            near.update((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))
    cells = tuple(
        None if (i, j) in near else p._ray_cast(x0 + (i + 0.5) * w, y0 + (j + 0.5) * h)
        for j in range(_GRID)
        for i in range(_GRID)
    )
    return _Polygon(p.outer, p.holes, p.bbox, cells)


@dataclass(frozen=True)
class OperatingArea:
    """The union of polygons a vehicle may be in."""

    polygons: tuple[_Polygon, ...]

    def contains(self, lat: float, lon: float) -> bool:
        """True when ``(lat, lon)`` is inside at least one polygon (note: lat first, as the tables)."""
        for p in self.polygons:  # a loop, not any(genexpr): this runs for every position the stream sees
            if p.contains(lon, lat):
                return True
        return False


def _ring(coords: Any) -> Ring:
    try:
        ring = tuple((float(c[0]), float(c[1])) for c in coords)
    except (TypeError, ValueError, IndexError):
        raise GeofenceError("a ring must be a list of [lon, lat] positions") from None
    if len(ring) < 3:
        raise GeofenceError("a ring needs at least 3 positions")
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in ring):
        raise GeofenceError("a ring holds a non-finite coordinate")
    return ring


def _polygon(rings: Any) -> _Polygon:
    if not isinstance(rings, list) or not rings:
        raise GeofenceError("a Polygon's coordinates must be a non-empty list of rings")
    outer = _ring(rings[0])
    xs, ys = [x for x, _ in outer], [y for _, y in outer]
    return _with_grid(_Polygon(outer, tuple(_ring(h) for h in rings[1:]), (min(xs), min(ys), max(xs), max(ys))))


def _geometries(doc: Any) -> Iterable[_Polygon]:
    if not isinstance(doc, dict):
        raise GeofenceError("GeoJSON must be an object")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        for feature in doc.get("features") or []:
            yield from _geometries(feature)
    elif kind == "Feature":
        yield from _geometries(doc.get("geometry"))
    elif kind == "Polygon":
        yield _polygon(doc.get("coordinates"))
    elif kind == "MultiPolygon":
        for rings in doc.get("coordinates") or []:
            yield _polygon(rings)
    else:
        raise GeofenceError(f"unsupported GeoJSON type {kind!r}: use Polygon, MultiPolygon, Feature(Collection)")


def parse_geojson(doc: Any) -> OperatingArea:
    polygons = tuple(_geometries(doc))
    if not polygons:
        raise GeofenceError("the GeoJSON holds no polygon")
    return OperatingArea(polygons)


def load_area(path: str) -> OperatingArea:
    """The operating area in the GeoJSON file ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise GeofenceError(f"cannot read geofence {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise GeofenceError(f"geofence {path} is not JSON: {exc}") from None
    return parse_geojson(doc)


def circle_ring(center: Sequence[float], radius_km: float, sides: int = 32) -> list[list[float]]:
    """A closed ring of ``sides`` vertices around ``center`` (lat, lon), as GeoJSON [lon, lat] pairs."""
    lat0, lon0 = center
    ring = []
    for k in range(sides + 1):
        theta = 2 * math.pi * (k % sides) / sides
        dlat = math.degrees(radius_km * math.cos(theta) / _EARTH_KM)
        dlon = math.degrees(radius_km * math.sin(theta) / (_EARTH_KM * math.cos(math.radians(lat0))))
        ring.append([round(lon0 + dlon, 6), round(lat0 + dlat, 6)])
    return ring


def default_geojson() -> dict:
    """The default operating area as a GeoJSON Polygon (what ``LAKE_GEOFENCE`` replaces)."""
    return {"type": "Polygon", "coordinates": [circle_ring(DEFAULT_CENTER, DEFAULT_RADIUS_KM)]}


def default_area() -> OperatingArea:
    return parse_geojson(default_geojson())
