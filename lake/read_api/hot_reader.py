"""Reading the hot store (contract section 9: PostgreSQL, schema ``hot``), for the read API.

Queries are bounded (every one has a LIMIT or a key), parameters always go
through psycopg2's binding (never formatted into SQL), and the connection is
read-only with a statement timeout, so a slow query cannot hold the API.
Lists are built as JSON by PostgreSQL itself (``json_agg``): for 10,000
vehicles that is a fraction of what converting rows in Python would cost.

The stream (``lake stream``, ``lake_core.hot_store``) owns the tables and
their DDL; this module only reads. ``live_vehicle_state`` has no
``vehicle_type``: it comes from the registry (``GET /v1/vehicles`` adds it).
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any, Iterator, Optional

import numpy as np
import psycopg2
import psycopg2.pool

from lake.read_api.downsample import SERIES_COLUMNS, Series
from lake_core.hot_store import HotStoreUnavailable, redact
from lake_schemas.hot import DEFAULT_RULES

__all__ = ["HotReader", "HotStoreUnavailable", "VEHICLE_COLUMNS", "LOW_BATTERY_PCT"]

#: ``low_battery``'s opening threshold (contract section 9), for the ``low_battery`` filter.
LOW_BATTERY_PCT = DEFAULT_RULES.low_battery_open_pct

#: What ``GET /v1/vehicles`` shows of each vehicle (``live_vehicle_state``'s contract columns).
VEHICLE_COLUMNS = (
    "vehicle_id",
    "zone_id",
    "lat",
    "lon",
    "soc_pct",
    "charging",
    "speed_kmh",
    "in_use",
    "locked",
    "online",
    "in_operating_area",
    "last_event_ts",
    "last_seen_at",
)
_VEHICLE_SELECT = ", ".join(VEHICLE_COLUMNS)


class HotReader:
    def __init__(self, dsn: str, max_connections: int = 8, statement_timeout_ms: int = 10_000):
        self._dsn = dsn
        self._max = max_connections
        self._timeout = statement_timeout_ms
        self._pool: Optional[psycopg2.pool.ThreadedConnectionPool] = None
        self._lock = threading.Lock()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                try:
                    self._pool = psycopg2.pool.ThreadedConnectionPool(
                        1,
                        self._max,
                        self._dsn,
                        options=f"-c timezone=UTC -c statement_timeout={self._timeout} "
                        "-c default_transaction_read_only=on",
                        connect_timeout=5,
                        application_name="lake serve",
                    )
                except psycopg2.Error as exc:
                    raise HotStoreUnavailable(
                        f"hot store at {redact(self._dsn)} unreachable: {_first_line(exc)}"
                    ) from exc
            return self._pool

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except psycopg2.Error as exc:
            raise HotStoreUnavailable(f"hot store at {redact(self._dsn)} unreachable: {_first_line(exc)}") from exc
        broken = False
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise HotStoreUnavailable(f"hot store: {_first_line(exc)}") from exc
        except psycopg2.errors.UndefinedTable as exc:
            raise HotStoreUnavailable(f"hot store has no such table yet (is `lake stream` set up?): {exc}") from exc
        finally:
            pool.putconn(conn, close=broken or conn.closed != 0)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None

    def ping(self) -> None:
        with self._cursor() as cur:
            cur.execute("SELECT 1 FROM hot.live_vehicle_state LIMIT 1")

    # -- vehicles

    def vehicles_json(
        self,
        limit: int,
        after: Optional[str] = None,
        zone: Optional[str] = None,
        vehicle_ids: Optional[list[str]] = None,
        online: Optional[bool] = None,
        low_battery: Optional[bool] = None,
        types_json: str = "{}",
    ) -> tuple[str, int, Optional[str]]:
        """(JSON array of vehicles, how many, the last vehicle id when more may follow), by vehicle id.

        ``types_json`` is the registry as a JSON object ``{vehicle_id: vehicle_type}``: PostgreSQL adds
        each vehicle's type while it builds the array, so the answer is never parsed in Python."""
        where, params = ["TRUE"], []
        if after is not None:
            where.append("vehicle_id > %s")
            params.append(after)
        if zone is not None:  # a geohash prefix: a cell and everything inside it
            where.append("zone_id LIKE %s")
            params.append(zone + "%")
        if vehicle_ids is not None:  # a type's vehicles, from the registry
            where.append("vehicle_id = ANY(%s)")
            params.append(vehicle_ids)
        if online is not None:
            where.append("online IS %s")
            params.append(online)
        if low_battery is not None:
            low = "(soc_pct < %s AND charging IS NOT TRUE)"
            where.append(low if low_battery else f"NOT coalesce({low}, false)")
            params.append(LOW_BATTERY_PCT)
        sql = (
            "SELECT coalesce(json_agg(v ORDER BY v.vehicle_id), '[]'::json)::text, count(*), max(v.vehicle_id) "
            f"FROM (SELECT {_VEHICLE_SELECT}, coalesce(%s::jsonb ->> vehicle_id, 'unknown') AS vehicle_type "
            f"FROM hot.live_vehicle_state WHERE {' AND '.join(where)} ORDER BY vehicle_id LIMIT %s) v"
        )
        with self._cursor() as cur:
            cur.execute(sql, [types_json, *params, limit])
            body, count, last = cur.fetchone()
        return body, count, (last if count == limit else None)

    def vehicle(self, vehicle_id: str) -> Optional[dict]:
        with self._cursor() as cur:
            cur.execute("SELECT row_to_json(s)::text FROM hot.live_vehicle_state s WHERE vehicle_id = %s", [vehicle_id])
            row = cur.fetchone()
        return None if row is None else json.loads(row[0])

    def known_vehicle(self, vehicle_id: str) -> bool:
        with self._cursor() as cur:
            cur.execute("SELECT 1 FROM hot.live_vehicle_state WHERE vehicle_id = %s", [vehicle_id])
            return cur.fetchone() is not None

    # -- series

    def minutes(self, vehicle_id: str, start_ms: int, end_ms: int) -> Series:
        """The vehicle's 1-minute windows starting in ``[start_ms, end_ms)``, as a series."""
        with self._cursor() as cur:
            cur.execute(
                "SELECT (extract(epoch FROM window_start) * 1000)::bigint, event_count, "
                "soc_min, soc_avg, soc_max, speed_avg, speed_max FROM hot.telemetry_1m "
                "WHERE vehicle_id = %s AND window_start >= to_timestamp(%s / 1000.0) "
                "AND window_start < to_timestamp(%s / 1000.0) ORDER BY window_start",
                [vehicle_id, start_ms, end_ms],
            )
            rows = cur.fetchall()
        columns = list(zip(*rows)) if rows else [()] * len(SERIES_COLUMNS)
        series: Series = {}
        for name, values in zip(SERIES_COLUMNS, columns):
            if name in ("t", "n"):
                series[name] = np.array(values, dtype=np.int64)
            else:  # None (no value in the window) becomes NaN
                series[name] = np.array(values, dtype=np.float64)
        return series

    # -- alerts, zones, stats

    def alerts_json(
        self,
        state: str,
        limit: int,
        vehicle_id: Optional[str] = None,
        rule: Optional[str] = None,
        before: Optional[tuple[int, str]] = None,
    ) -> tuple[str, int, Optional[str]]:
        """Alerts newest first; ``before`` (opened_at ms, alert_id) continues a previous page."""
        where, params = ["TRUE"], []
        if state == "open":
            where.append("resolved_at IS NULL")
        elif state == "resolved":
            where.append("resolved_at IS NOT NULL")
        if vehicle_id is not None:
            where.append("vehicle_id = %s")
            params.append(vehicle_id)
        if rule is not None:
            where.append("rule = %s")
            params.append(rule)
        if before is not None:
            where.append("(opened_at, alert_id) < (to_timestamp(%s / 1000.0), %s)")
            params.extend(before)
        sql = (
            "SELECT coalesce(json_agg(a ORDER BY a.opened_at DESC, a.alert_id DESC), '[]'::json)::text, count(*), "
            "min((extract(epoch FROM a.opened_at) * 1000)::bigint || ':' || a.alert_id) "
            "FROM (SELECT alert_id, vehicle_id, rule, severity, opened_at, resolved_at, details "
            f"FROM hot.alerts WHERE {' AND '.join(where)} ORDER BY opened_at DESC, alert_id DESC LIMIT %s) a"
        )
        with self._cursor() as cur:
            cur.execute(sql, [*params, limit])
            body, count, last = cur.fetchone()
        return body, count, (last if count == limit else None)

    def zone_activity_json(self, start_ms: int, end_ms: int, limit: int) -> tuple[str, int]:
        with self._cursor() as cur:
            cur.execute(
                "SELECT coalesce(json_agg(z ORDER BY z.window_start DESC, z.zone_id), '[]'::json)::text, count(*) "
                "FROM (SELECT zone_id, window_start, active_vehicles, event_count FROM hot.zone_activity_5m "
                "WHERE window_start >= to_timestamp(%s / 1000.0) AND window_start < to_timestamp(%s / 1000.0) "
                "ORDER BY window_start DESC, zone_id LIMIT %s) z",
                [start_ms, end_ms, limit],
            )
            body, count = cur.fetchone()
        return body, count

    def latest_zone_window_ms(self) -> Optional[int]:
        with self._cursor() as cur:
            cur.execute("SELECT (extract(epoch FROM max(window_start)) * 1000)::bigint FROM hot.zone_activity_5m")
            return cur.fetchone()[0]

    def stats(self, since_ms: int) -> dict:
        """Fleet counts, open alerts by rule, and per-window throughput and alerts since ``since_ms``."""
        with self._cursor() as cur:
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE online), "
                "count(*) FILTER (WHERE soc_pct < %s AND charging IS NOT TRUE), count(*) FILTER (WHERE in_use), "
                "(extract(epoch FROM max(last_seen_at)) * 1000)::bigint, "
                "(extract(epoch FROM max(last_event_ts)) * 1000)::bigint FROM hot.live_vehicle_state",
                [LOW_BATTERY_PCT],
            )
            total, online, low, in_use, last_seen, last_event = cur.fetchone()
            cur.execute("SELECT rule, count(*) FROM hot.alerts WHERE resolved_at IS NULL GROUP BY rule ORDER BY rule")
            open_by_rule = dict(cur.fetchall())
            cur.execute(
                "SELECT (extract(epoch FROM date_trunc('hour', opened_at)) * 1000)::bigint, rule, count(*) "
                "FROM hot.alerts WHERE opened_at >= to_timestamp(%s / 1000.0) GROUP BY 1, 2 ORDER BY 1, 2",
                [since_ms],
            )
            opened = [{"hour": h, "rule": r, "count": c} for h, r, c in cur.fetchall()]
            cur.execute(
                "SELECT (extract(epoch FROM window_start) * 1000)::bigint, sum(event_count)::bigint "
                "FROM hot.zone_activity_5m WHERE window_start >= to_timestamp(%s / 1000.0) GROUP BY 1 ORDER BY 1",
                [since_ms],
            )
            throughput = [{"window_start": w, "events": e} for w, e in cur.fetchall()]
        return {
            "vehicles": {"total": total, "online": online, "low_battery": low, "in_use": in_use},
            "last_seen_at_ms": last_seen,
            "last_event_ts_ms": last_event,
            "open_alerts_by_rule": open_by_rule,
            "alerts_opened_per_hour": opened,
            "events_per_5m": throughput,
        }


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
