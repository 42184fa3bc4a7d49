"""``lake serve``: the read API over the hot store and the lake, its metrics and the fleet dashboard.

Starlette on uvicorn, as the gateway (``lake.edge.gateway``: measured faster
than FastAPI for the same endpoint); the OpenAPI document is written out in
``read_api.openapi``. Every endpoint is bounded (limits, pages, a largest
time range), checks its parameters (``read_api.params``: a 400 naming the
parameter), and reads PostgreSQL in a thread (psycopg2 blocks) from a small
pool. Requests from anywhere but loopback need an API key (``LAKE_API_KEYS``)
as ``Authorization: Bearer <key>`` or ``X-API-Key``; without keys the API
refuses to listen on anything but loopback.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lake.observability.api_metrics import ApiMetrics
from lake.observability.freshness import recent_silver_hours
from lake.read_api.data_docs import read_data_docs
from lake.read_api.downsample import SERIES_COLUMNS, concat, downsample
from lake.read_api.hot_reader import HotReader, HotStoreUnavailable
from lake.read_api.openapi import openapi_document
from lake.read_api.params import (
    MAX_POINTS,
    MAX_RANGE_DAYS,
    MAX_VEHICLES_PAGE,
    RULE_PATTERN,
    TYPE_PATTERN,
    ZONE_PATTERN,
    BadParameter,
    check_vehicle_id,
    parse_bool,
    parse_choice,
    parse_int,
    parse_pattern,
    parse_time_ms,
    reject_unknown,
)
from lake.read_api.silver_series import silver_series
from lake_core.errors import ConfigError
from lake_core.registry import read_registry
from lake_schemas.geofence import GeofenceError, default_geojson, load_area

__all__ = ["ReadApiOptions", "create_app", "serve", "STATIC_DIR"]

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
DAY_MS = 86_400_000
_ENCODE = msgspec.json.Encoder()
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ReadApiOptions:
    lake_root: str
    hot_dsn: str
    host: str = "127.0.0.1"
    port: int = 8001
    hot_days: float = 3.0  # the hot store's horizon: older ranges come from Silver
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    registry_ttl_s: float = 60.0
    kafka: Optional[tuple[str, str]] = None  # (bootstrap, topic): freshness against the newest record
    geofence_path: Optional[str] = None  # a GeoJSON file of the operating areas (default: the simulator's city)

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port {self.port} is not a TCP port")
        if self.host not in _LOOPBACK and not self.api_keys:
            raise ConfigError(
                f"--host {self.host} is not loopback: set LAKE_API_KEYS (comma-separated keys) so clients must "
                "present one, or keep the default 127.0.0.1"
            )
        if self.geofence_path is not None:
            try:
                load_area(self.geofence_path)
            except GeofenceError as exc:
                raise ConfigError(str(exc)) from None
        if not 0 < self.hot_days <= 30:
            raise ConfigError("--hot-days must be above 0 and at most 30")


def _json(body: Any, status: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(_ENCODE.encode(body), status_code=status, media_type="application/json", headers=headers)


class _Registry:
    """The registry's vehicle types by id, re-read at most every ``ttl`` seconds (it changes rarely)."""

    def __init__(self, lake_root: str, ttl: float):
        self._lake_root, self._ttl = lake_root, ttl
        self._types: dict[str, str] = {}
        self._json = "{}"
        self._read_at = -1e9
        self._lock = threading.Lock()

    def types(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._read_at > self._ttl:
                try:
                    table = read_registry(self._lake_root)
                    ids = table.column("vehicle_id").to_pylist()
                    self._types = dict(zip(ids, table.column("vehicle_type").to_pylist()))
                except Exception:  # no registry yet, or unreadable: the hot store alone decides
                    self._types = {}
                self._json = _ENCODE.encode(self._types).decode()
                self._read_at = time.monotonic()
            return self._types

    def types_json(self) -> str:
        """The same, as one JSON object (what PostgreSQL joins in ``GET /v1/vehicles``)."""
        self.types()
        return self._json


class ReadApi:
    def __init__(self, options: ReadApiOptions, clock: Callable[[], float] = time.time):
        self.options = options
        self.hot = HotReader(options.hot_dsn)
        self.metrics = ApiMetrics(options.lake_root, self.hot, options.kafka)
        self._registry = _Registry(options.lake_root, options.registry_ttl_s)
        self._clock = clock
        self._keys = tuple(k.encode() for k in options.api_keys)

    # -- plumbing

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.hot.close()

    def _allowed(self, request: Request) -> bool:
        client = request.client.host if request.client else ""
        if client in _LOOPBACK:
            return True
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        # pages a browser opens (Data Docs) carry the key the dashboard put in a cookie
        key = key or request.cookies.get("lake_key", "")
        return bool(key) and any(hmac.compare_digest(key.encode(), k) for k in self._keys)

    def endpoint(self, route: str, handler: Callable[[Request], Awaitable[Response]], public: bool = False):
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            if not public and not self._allowed(request):
                response = _json(
                    {"error": "an API key is needed from outside loopback (Authorization: Bearer <key>)"},
                    401,
                    {"WWW-Authenticate": 'Bearer realm="lake"'},
                )
            else:
                try:
                    response = await handler(request)
                except BadParameter as exc:
                    response = _json({"error": str(exc), "parameter": exc.parameter}, exc.status)
                except HotStoreUnavailable as exc:
                    response = _json({"error": str(exc)}, 503, {"Retry-After": "5"})
            self.metrics.request(route, response.status_code, time.perf_counter() - started)
            return response

        return wrapped

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- endpoints

    async def vehicles(self, request: Request) -> Response:
        q = request.query_params
        reject_unknown(q, ("zone", "type", "online", "low_battery", "limit", "after"))
        after = q.get("after")
        vehicle_type = parse_pattern("type", q.get("type"), TYPE_PATTERN, "a vehicle type such as scooter")
        types = await run_in_threadpool(self._registry.types)
        kwargs = {
            "types_json": self._registry.types_json(),
            "limit": parse_int("limit", q.get("limit"), 1000, 1, MAX_VEHICLES_PAGE),
            "after": None if after is None else check_vehicle_id(after),
            "zone": parse_pattern("zone", q.get("zone"), ZONE_PATTERN, "a geohash (digits and b-z but a, i, l, o)"),
            "vehicle_ids": None if vehicle_type is None else [v for v, t in types.items() if t == vehicle_type],
            "online": parse_bool("online", q.get("online")),
            "low_battery": parse_bool("low_battery", q.get("low_battery")),
        }
        body, count, last = await run_in_threadpool(self.hot.vehicles_json, **kwargs)
        head = _ENCODE.encode({"count": count, "next_after": last})
        # {"count":..,"next_after":..,"vehicles":[...]}: PostgreSQL's array spliced in, never parsed here
        return Response(head[:-1] + b',"vehicles":' + body.encode() + b"}", media_type="application/json")

    async def vehicle(self, request: Request) -> Response:
        reject_unknown(request.query_params, ())
        vehicle_id = check_vehicle_id(request.path_params["vehicle_id"])
        state = await run_in_threadpool(self.hot.vehicle, vehicle_id)
        if state is None:
            return _json({"error": f"vehicle {vehicle_id} is not in the hot store (unknown or silent for days)"}, 404)
        state["vehicle_type"] = (await run_in_threadpool(self._registry.types)).get(vehicle_id, "unknown")
        alerts, _, _ = await run_in_threadpool(self.hot.alerts_json, "open", 100, vehicle_id)
        state["open_alerts"] = msgspec.json.decode(alerts)
        return _json(state)

    def _known(self, vehicle_id: str) -> bool:
        return vehicle_id in self._registry.types() or self.hot.known_vehicle(vehicle_id)

    def _series(self, vehicle_id: str, start: int, end: int, max_points: int) -> dict:
        cutoff = self._now_ms() - int(self.options.hot_days * DAY_MS)
        parts, sources = [], []
        if start < cutoff:
            silver_end = min(end, cutoff)
            events, count = silver_series(self.options.lake_root, vehicle_id, start, silver_end, max_points)
            parts.append(events)
            sources.append({"source": "silver", "start": start, "end": silver_end, "points": count})
        if end > cutoff:
            hot_start = max(start, cutoff)
            parts.append(self.hot.minutes(vehicle_id, hot_start, end))
            sources.append({"source": "hot", "start": hot_start, "end": end, "points": len(parts[-1]["t"])})
        series = concat(parts)
        found = sum(source["points"] for source in sources)
        series = downsample(series, start, end, max_points)
        columns = [series[c].tolist() for c in SERIES_COLUMNS]
        points = [dict(zip(SERIES_COLUMNS, row)) for row in zip(*columns)]
        for point in points:  # NaN (no value in that minute) is null in JSON
            for key in ("soc_min", "soc_avg", "soc_max", "speed_avg", "speed_max"):
                if point[key] != point[key]:
                    point[key] = None
        return {
            "vehicle_id": vehicle_id,
            "start": start,
            "end": end,
            "max_points": max_points,
            "points_in_range": found,
            "downsampled": len(points) < found,
            "sources": sources,
            "points": points,
        }

    async def telemetry(self, request: Request) -> Response:
        q = request.query_params
        reject_unknown(q, ("start", "end", "max_points"))
        vehicle_id = check_vehicle_id(request.path_params["vehicle_id"])
        now = self._now_ms()
        end = parse_time_ms("end", q.get("end"))
        start = parse_time_ms("start", q.get("start"))
        end = now if end is None else end
        start = end - DAY_MS if start is None else start
        if start >= end:
            raise BadParameter("start", "start must be before end (the range is inverted or empty)")
        if end - start > MAX_RANGE_DAYS * DAY_MS:
            raise BadParameter("end", f"the range is too large: at most {MAX_RANGE_DAYS} days per request")
        max_points = parse_int("max_points", q.get("max_points"), MAX_POINTS, 10, MAX_POINTS)
        if not await run_in_threadpool(self._known, vehicle_id):
            return _json({"error": f"unknown vehicle {vehicle_id}"}, 404)
        body = await run_in_threadpool(self._series, vehicle_id, start, end, max_points)
        return _json(body)

    async def alerts(self, request: Request) -> Response:
        q = request.query_params
        reject_unknown(q, ("state", "vehicle_id", "rule", "limit", "before"))
        vehicle_id = q.get("vehicle_id")
        before = q.get("before")
        cursor = None
        if before is not None:
            ms, _, alert_id = before.partition(":")
            try:
                cursor = (int(ms), str(uuid.UUID(alert_id)))
            except ValueError:
                raise BadParameter("before", "before is the next_before value of a previous page") from None
            if not 0 <= cursor[0] < 4_102_444_800_000:
                raise BadParameter("before", "before is the next_before value of a previous page")
        body, count, last = await run_in_threadpool(
            self.hot.alerts_json,
            parse_choice("state", q.get("state"), ("open", "resolved", "all"), "open"),
            parse_int("limit", q.get("limit"), 500, 1, 5000),
            None if vehicle_id is None else check_vehicle_id(vehicle_id),
            parse_pattern("rule", q.get("rule"), RULE_PATTERN, "a rule name such as low_battery"),
            cursor,
        )
        head = _ENCODE.encode({"count": count, "next_before": last})
        return Response(head[:-1] + b',"alerts":' + body.encode() + b"}", media_type="application/json")

    async def zones(self, request: Request) -> Response:
        q = request.query_params
        reject_unknown(q, ("start", "end", "limit"))
        start = parse_time_ms("start", q.get("start"))
        end = parse_time_ms("end", q.get("end"))
        limit = parse_int("limit", q.get("limit"), 5000, 1, 50_000)
        if start is None and end is None:  # the latest 5-minute window
            latest = await run_in_threadpool(self.hot.latest_zone_window_ms)
            start = latest if latest is not None else self._now_ms()
            end = start + 1
        elif start is None or end is None:
            raise BadParameter("start" if start is None else "end", "give both start and end, or neither")
        if start >= end:
            raise BadParameter("start", "start must be before end (the range is inverted or empty)")
        if end - start > 7 * DAY_MS:
            raise BadParameter("end", "the range is too large: at most 7 days of zone windows per request")
        body, count = await run_in_threadpool(self.hot.zone_activity_json, start, end, limit)
        head = _ENCODE.encode({"count": count, "start": start, "end": end})
        return Response(head[:-1] + b',"zones":' + body.encode() + b"}", media_type="application/json")

    async def stats(self, request: Request) -> Response:
        reject_unknown(request.query_params, ())
        since = self._now_ms() - DAY_MS
        hot = await run_in_threadpool(self.hot.stats, since)
        lake = await run_in_threadpool(self.metrics.lake_snapshot)
        silver_hours = await run_in_threadpool(recent_silver_hours, self.options.lake_root, 48)
        return _json({"now": self._now_ms(), "hot": hot, **lake, "silver_hours": silver_hours})

    async def geofence(self, request: Request) -> Response:
        reject_unknown(request.query_params, ())
        if self.options.geofence_path is None:
            return _json(default_geojson())
        with open(self.options.geofence_path, "rb") as f:  # checked at start (ReadApiOptions.check)
            return Response(f.read(), media_type="application/geo+json")

    async def health(self, _request: Request) -> Response:
        try:
            await run_in_threadpool(self.hot.ping)
        except HotStoreUnavailable as exc:
            return _json({"status": "degraded", "hot_store": str(exc)}, 503)
        return _json({"status": "ok"})

    async def metrics_text(self, _request: Request) -> Response:
        body, content_type = await run_in_threadpool(self.metrics.exposition)
        return Response(body, media_type=content_type)

    async def openapi(self, _request: Request) -> Response:
        return _json(openapi_document())

    async def data_docs(self, request: Request) -> Response:
        found = await run_in_threadpool(read_data_docs, self.options.lake_root, request.path_params.get("path", ""))
        if found is None:
            return _json({"error": "no such Data Docs page (have the quality gates run on this lake?)"}, 404)
        body, media = found
        return Response(body, media_type=media)

    async def dashboard(self, _request: Request) -> Response:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html")


def create_app(options: ReadApiOptions, clock: Callable[[], float] = time.time) -> Any:
    options.check()
    api = ReadApi(options, clock)
    e = api.endpoint
    routes = [
        Route("/", e("/", api.dashboard, public=True)),
        Route("/healthz", e("/healthz", api.health, public=True)),
        Route("/metrics", e("/metrics", api.metrics_text)),
        Route("/openapi.json", e("/openapi.json", api.openapi, public=True)),
        Route("/v1/vehicles", e("/v1/vehicles", api.vehicles)),
        Route("/v1/vehicles/{vehicle_id}", e("/v1/vehicles/{id}", api.vehicle)),
        Route("/v1/vehicles/{vehicle_id}/telemetry", e("/v1/vehicles/{id}/telemetry", api.telemetry)),
        Route("/v1/alerts", e("/v1/alerts", api.alerts)),
        Route("/v1/zones/activity", e("/v1/zones/activity", api.zones)),
        Route("/v1/stats", e("/v1/stats", api.stats)),
        Route("/v1/geofence", e("/v1/geofence", api.geofence)),
        Route("/data-docs/", e("/data-docs", api.data_docs)),
        Route("/data-docs/{path:path}", e("/data-docs", api.data_docs)),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=api.lifespan)
    app.state.api = api
    return app


def serve(options: ReadApiOptions, verbose: bool = False) -> None:
    """Run the read API in this process until SIGINT/SIGTERM (uvicorn drains the requests in flight)."""
    import uvicorn  # noqa: PLC0415 - keeps `lake --help` light

    options.check()
    config = uvicorn.Config(
        create_app(options),
        host=options.host,
        port=options.port,
        loop="auto",
        http="auto",
        log_level="info" if verbose else "warning",
        access_log=verbose,
        timeout_graceful_shutdown=10,
    )
    print(f"lake serve: http://{options.host}:{options.port}/ (API under /v1, /openapi.json, /metrics)", flush=True)
    uvicorn.Server(config).run()
