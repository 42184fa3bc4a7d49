"""The hot store (contract section 9): PostgreSQL schema ``hot``, its DDL and its writes.

Import this module for the table names and columns (``TABLES``,
``LIVE_STATE_COLUMNS``...), for the DDL (``MIGRATIONS``, applied in order by
``migrate``), for ``connect`` and for the day partitions. Readers (the
metrics API, dashboards) query:

- ``hot.live_vehicle_state``  one row per vehicle (primary key ``vehicle_id``)
- ``hot.telemetry_1m``, ``hot.telemetry_5m``  per vehicle and window (``vehicle_id, window_start``)
- ``hot.zone_activity_5m``  per zone and window (a view summing the per-Kafka-partition
  parts the stream writes into ``hot.zone_activity_5m_parts``: a vehicle stays on one
  partition, so distinct vehicles add up)
- ``hot.alerts``  one row per alert (``alert_id``); open ones have ``resolved_at IS NULL``

Windowed tables and alerts are partitioned by day (``window_start``,
``opened_at``; UTC); ``drop_days_before`` drops whole days. The stream's own
bookkeeping (offsets, state snapshots, the alert outbox, counters) lives in
the same schema under ``stream_*`` names.

Writes are bulk upserts: rows are COPYed into a temporary staging table,
then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (``upsert``).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from lake_core.errors import ConfigError, LakeError
from lake_schemas.hot import DEFAULT_HOT_DSN, HOT_SCHEMA

__all__ = [
    "DEFAULT_HOT_DSN",
    "HOT_SCHEMA",
    "HotStoreUnavailable",
    "MIGRATIONS",
    "TABLES",
    "connect",
    "ensure_database",
    "migrate",
    "ensure_day_partitions",
    "drop_days_before",
    "upsert",
]

S = HOT_SCHEMA

#: Columns of ``live_vehicle_state`` after ``vehicle_id``: the Silver fields (contract section 3), then ours.
SILVER_FIELD_TYPES: tuple[tuple[str, str], ...] = (
    ("lat", "double precision"),
    ("lon", "double precision"),
    ("alt_m", "double precision"),
    ("accuracy_m", "double precision"),
    ("soc_pct", "double precision"),
    ("voltage_v", "double precision"),
    ("current_a", "double precision"),
    ("battery_temp_c", "double precision"),
    ("charging", "boolean"),
    ("speed_kmh", "double precision"),
    ("heading_deg", "double precision"),
    ("accel_ms2", "double precision"),
    ("locked", "boolean"),
    ("in_use", "boolean"),
    ("ignition", "boolean"),
    ("trip_id", "text"),
    ("odometer_km", "double precision"),
    ("error_codes", "text[]"),
    ("zone_id", "text"),
)
SILVER_FIELDS = tuple(name for name, _ in SILVER_FIELD_TYPES)
LIVE_STATE_COLUMNS = (
    "vehicle_id",
    *SILVER_FIELDS,
    "last_event_id",
    "last_event_ts",
    "last_seen_at",
    "online",
    "in_operating_area",
    "kafka_partition",
    "kafka_offset",
)
WINDOW_COLUMNS = (
    "vehicle_id",
    "window_start",
    "event_count",
    "soc_min",
    "soc_avg",
    "soc_max",
    "speed_avg",
    "speed_max",
    "distance_km",
)
ZONE_PART_COLUMNS = ("zone_id", "window_start", "kafka_partition", "active_vehicles", "event_count")
ALERT_COLUMNS = ("alert_id", "vehicle_id", "rule", "severity", "opened_at", "resolved_at", "details")
OUTBOX_COLUMNS = ("alert_id", "seq", "vehicle_id", "rule", "state", "at", "details", "kafka_partition")

#: The tables readers use, by contract name.
TABLES = {
    "live_vehicle_state": f"{S}.live_vehicle_state",
    "telemetry_1m": f"{S}.telemetry_1m",
    "telemetry_5m": f"{S}.telemetry_5m",
    "zone_activity_5m": f"{S}.zone_activity_5m",
    "alerts": f"{S}.alerts",
}
#: Tables partitioned by day, and the column that names the day.
DAY_PARTITIONED = {
    "telemetry_1m": "window_start",
    "telemetry_5m": "window_start",
    "zone_activity_5m_parts": "window_start",
    "alerts": "opened_at",
}
#: The window table of each window size (ms).
WINDOW_TABLES = {60_000: "telemetry_1m", 300_000: "telemetry_5m"}


def _window_table(name: str) -> str:
    return f"""
CREATE TABLE {S}.{name} (
    vehicle_id   text NOT NULL,
    window_start timestamptz NOT NULL,
    event_count  integer NOT NULL,
    soc_min      double precision,
    soc_avg      double precision,
    soc_max      double precision,
    speed_avg    double precision,
    speed_max    double precision,
    distance_km  double precision NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vehicle_id, window_start)
) PARTITION BY RANGE (window_start);
-- "all vehicles in the last N minutes" (a dashboard's time range)
CREATE INDEX {name}_window ON {S}.{name} (window_start);
"""


_LIVE_FIELDS_SQL = ",\n    ".join(f"{name} {kind}" for name, kind in SILVER_FIELD_TYPES)

#: The hot store's migrations, applied in order and recorded in ``hot.schema_migrations``.
#: Never edit one that shipped: add the next.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "hot store: live state, windows, zone activity, alerts, stream bookkeeping",
        f"""
CREATE TABLE {S}.live_vehicle_state (
    vehicle_id text PRIMARY KEY,
    {_LIVE_FIELDS_SQL},
    last_event_id     text,
    last_event_ts     timestamptz NOT NULL,
    last_seen_at      timestamptz NOT NULL,
    online            boolean NOT NULL DEFAULT true,
    in_operating_area boolean,
    kafka_partition   integer NOT NULL,
    kafka_offset      bigint NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- "latest state of all vehicles" is a scan of this table (one row per vehicle);
-- (migration 2 drops these two again)
CREATE INDEX live_vehicle_state_last_seen ON {S}.live_vehicle_state (last_seen_at);
CREATE INDEX live_vehicle_state_zone ON {S}.live_vehicle_state (zone_id);
{_window_table("telemetry_1m")}
{_window_table("telemetry_5m")}
CREATE TABLE {S}.zone_activity_5m_parts (
    zone_id         text NOT NULL,
    window_start    timestamptz NOT NULL,
    kafka_partition integer NOT NULL,
    active_vehicles integer NOT NULL,
    event_count     integer NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (zone_id, window_start, kafka_partition)
) PARTITION BY RANGE (window_start);
CREATE INDEX zone_activity_5m_parts_window ON {S}.zone_activity_5m_parts (window_start);
CREATE VIEW {S}.zone_activity_5m AS
    SELECT zone_id, window_start, sum(active_vehicles)::integer AS active_vehicles,
           sum(event_count)::integer AS event_count
    FROM {S}.zone_activity_5m_parts GROUP BY zone_id, window_start;
CREATE TABLE {S}.alerts (
    alert_id    uuid NOT NULL,
    vehicle_id  text NOT NULL,
    rule        text NOT NULL,
    severity    text NOT NULL,
    opened_at   timestamptz NOT NULL,
    resolved_at timestamptz,
    details     jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, opened_at)
) PARTITION BY RANGE (opened_at);
-- "open alerts"
CREATE INDEX alerts_open ON {S}.alerts (rule, opened_at) WHERE resolved_at IS NULL;
-- one vehicle's alerts
CREATE INDEX alerts_vehicle ON {S}.alerts (vehicle_id, opened_at);
-- the stream's bookkeeping
CREATE TABLE {S}.stream_offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
CREATE TABLE {S}.stream_state (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    state       bytea NOT NULL,
    saved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
CREATE TABLE {S}.stream_counters (
    topic     text NOT NULL,
    partition integer NOT NULL,
    counts    jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE {S}.stream_alert_outbox (
    id              bigserial PRIMARY KEY,
    alert_id        uuid NOT NULL,
    seq             integer NOT NULL,
    vehicle_id      text NOT NULL,
    rule            text NOT NULL,
    state           text NOT NULL,
    at              timestamptz NOT NULL,
    details         jsonb NOT NULL,
    kafka_partition integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    webhook_at      timestamptz,
    UNIQUE (alert_id, seq)
);
CREATE INDEX stream_alert_outbox_unpublished ON {S}.stream_alert_outbox (id) WHERE published_at IS NULL;
CREATE INDEX stream_alert_outbox_webhook ON {S}.stream_alert_outbox (id) WHERE webhook_at IS NULL;
CREATE TABLE {S}.stream_publisher (
    alerts_topic text NOT NULL,
    partition    integer NOT NULL,
    checked_to   bigint NOT NULL,
    PRIMARY KEY (alerts_topic, partition)
);
""",
    ),
    (
        2,
        "live_vehicle_state: updated in place (HOT): no secondary index on columns every message changes",
        f"""
-- Every message rewrites its vehicle's row; with last_seen_at and zone_id indexed, each update wrote
-- every index and a new tuple elsewhere (measured: the stream's commits spent their time here).
-- "Latest state of all vehicles" is a scan of this one-row-per-vehicle table anyway.
DROP INDEX IF EXISTS {S}.live_vehicle_state_last_seen;
DROP INDEX IF EXISTS {S}.live_vehicle_state_zone;
ALTER TABLE {S}.live_vehicle_state SET (fillfactor = 50);
""",
    ),
)


class HotStoreUnavailable(LakeError):
    """PostgreSQL cannot be reached (the stream waits and retries; a command exits 4)."""

    exit_code = 4


def _psycopg() -> Any:
    import psycopg2  # noqa: PLC0415 - only the hot path needs the driver; `lake --help` stays light

    return psycopg2


def redact(dsn: str) -> str:
    """``dsn`` without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


# the DSN's own options come after these. Server-side keepalives: a backend whose client vanished (the
# stream's lock connection across a network cut) is ended within about half a minute, releasing its locks.
_SESSION_OPTIONS = (
    "-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s "
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
)


def connect(dsn: str, timeout: float = 5.0) -> Any:
    """A psycopg2 connection (autocommit off)."""
    pg = _psycopg()
    try:
        # TCP keepalives and a user timeout: a PostgreSQL that vanished without closing the connection
        # (a network partition, a killed VM) is noticed in about half a minute, not after the kernel's
        # two hours, so the stream's retry loop gets its chance instead of a read that never returns.
        return pg.connect(
            dsn,
            connect_timeout=max(1, int(timeout)),
            application_name="lake-stream",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=30_000,
            # A connection cut mid-transaction can leave its server backend holding row locks (the
            # offsets' FOR UPDATE) until the server notices: the next commit would wait on them for
            # as long. The server ends such an orphan after 60 s idle in its transaction, and a lock
            # wait over 30 s fails (LockNotAvailable, retried by ``with_retries``) instead of hanging.
            options=" ".join(filter(None, [_SESSION_OPTIONS, pg.extensions.parse_dsn(dsn).get("options")])),
        )
    except pg.OperationalError as exc:
        raise HotStoreUnavailable(f"PostgreSQL at {redact(dsn)} is unreachable: {str(exc).strip()}") from None


def ensure_database(dsn: str) -> None:
    """Create the DSN's database when the server has none of that name (the default ``lake_hot``)."""
    pg = _psycopg()
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        return
    try:
        conn = pg.connect(dsn, connect_timeout=5)
        conn.close()
        return
    except pg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise HotStoreUnavailable(f"PostgreSQL at {redact(dsn)} is unreachable: {str(exc).strip()}") from None
    admin = connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            try:
                cur.execute(f'CREATE DATABASE "{name}"')
            except pg.errors.DuplicateDatabase:
                pass
    finally:
        admin.close()


def migrate(conn: Any) -> list[int]:
    """Apply the migrations ``conn``'s database lacks (under an advisory lock); the versions applied."""
    applied = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lake-hot-migrations'))")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {S}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {S}.schema_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute(f"SELECT version FROM {S}.schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            cur.execute(sql)
            cur.execute(f"INSERT INTO {S}.schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(version)
    conn.commit()
    return applied


def day_of_ms(ms: int) -> _dt.date:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).date()


def _partition_name(table: str, day: _dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def ensure_day_partitions(cur: Any, days: Iterable[_dt.date], known: set) -> None:
    """Create the day partitions of every day-partitioned table for ``days`` (``known``: those made already)."""
    for day in sorted(set(days) - known):
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lake-hot-partitions'))")
        lo, hi = day.isoformat(), (day + _dt.timedelta(days=1)).isoformat()
        for table in DAY_PARTITIONED:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {S}.{_partition_name(table, day)} PARTITION OF {S}.{table} "
                f"FOR VALUES FROM ('{lo} 00:00:00+00') TO ('{hi} 00:00:00+00')"
            )
        known.add(day)


def day_partitions(cur: Any) -> dict[str, list[_dt.date]]:
    """The day partitions each day-partitioned table has."""
    out: dict[str, list[_dt.date]] = {t: [] for t in DAY_PARTITIONED}
    cur.execute(
        "SELECT parent.relname, child.relname FROM pg_inherits "
        "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
        "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
        "JOIN pg_namespace ns ON ns.oid = parent.relnamespace WHERE ns.nspname = %s",
        (S,),
    )
    for parent, child in cur.fetchall():
        if parent in out and child.startswith(f"{parent}_p"):
            out[parent].append(_dt.datetime.strptime(child[len(parent) + 2 :], "%Y%m%d").date())
    return out


def drop_days_before(cur: Any, first_kept: _dt.date, known: Optional[set] = None) -> list[str]:
    """Drop every day partition before ``first_kept`` (and live rows not heard from since); the names dropped."""
    dropped = []
    for table, days in day_partitions(cur).items():
        for day in days:
            if day < first_kept:
                name = _partition_name(table, day)
                cur.execute(f"DROP TABLE IF EXISTS {S}.{name}")
                dropped.append(name)
                if known is not None:
                    known.discard(day)
    cur.execute(
        f"DELETE FROM {S}.live_vehicle_state WHERE last_event_ts < %s", (f"{first_kept.isoformat()} 00:00:00+00",)
    )
    return dropped


# --------------------------------------------------------------------------
# Bulk upserts: COPY into a staging table, then INSERT ... ON CONFLICT
# --------------------------------------------------------------------------
def ts_text(ms: Optional[int]) -> Optional[str]:
    """Epoch ms as a timestamptz literal."""
    if ms is None:
        return None
    seconds, milli = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}+00"


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _array_literal(items: Sequence[Any]) -> str:
    inner = ",".join('"' + str(i).replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return "{" + inner + "}"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return _quote(_array_literal(value))
    if isinstance(value, dict):
        return _quote(json.dumps(value, separators=(",", ":"), sort_keys=True))
    return _quote(str(value))


@dataclass(frozen=True)
class UpsertSpec:
    table: str  # without the schema
    columns: tuple[str, ...]
    key: tuple[str, ...]
    #: SQL for each updated column (default ``EXCLUDED.<col>``); columns absent from it and the key are updated too.
    update: Optional[dict] = None
    #: ``DO NOTHING`` on conflict instead of an update.
    insert_only: bool = False


def upsert(cur: Any, spec: UpsertSpec, rows: Sequence[Sequence[Any]]) -> int:
    """COPY ``rows`` into a staging copy of ``spec.table``, then insert them, updating on key conflicts."""
    if not rows:
        return 0
    stage = f"stage_{spec.table}"
    cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {S}.{spec.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    buf = io.StringIO()
    for row in rows:
        buf.write(",".join(_csv_cell(v) for v in row))
        buf.write("\n")
    buf.seek(0)
    cols = ", ".join(spec.columns)
    cur.copy_expert(f"COPY {stage} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
    if spec.insert_only:
        action = "DO NOTHING"
    else:
        sets = dict(spec.update or {})
        assignments = [f"{c} = {sets.get(c, f'EXCLUDED.{c}')}" for c in spec.columns if c not in spec.key]
        if "updated_at" not in spec.columns:
            assignments.append("updated_at = now()")
        action = "DO UPDATE SET " + ", ".join(assignments)
    cur.execute(
        f"INSERT INTO {S}.{spec.table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({', '.join(spec.key)}) {action}"
    )
    cur.execute(f"TRUNCATE {stage}")
    return len(rows)


LIVE_STATE = UpsertSpec("live_vehicle_state", LIVE_STATE_COLUMNS, ("vehicle_id",))
WINDOWS = {ms: UpsertSpec(name, WINDOW_COLUMNS, ("vehicle_id", "window_start")) for ms, name in WINDOW_TABLES.items()}
ZONE_PARTS = UpsertSpec("zone_activity_5m_parts", ZONE_PART_COLUMNS, ("zone_id", "window_start", "kafka_partition"))
ALERTS = UpsertSpec("alerts", ALERT_COLUMNS, ("alert_id", "opened_at"))
OUTBOX = UpsertSpec("stream_alert_outbox", OUTBOX_COLUMNS, ("alert_id", "seq"), insert_only=True)


def with_retries(
    dsn: str,
    work: Callable[[Any], Any],
    on_wait: Callable[[str, float], None],
    give_up_after: Optional[float] = None,
    conn_box: Optional[list] = None,
) -> Any:
    """Run ``work(conn)`` in a transaction, reconnecting and retrying while PostgreSQL is unreachable.

    ``on_wait(message, delay)`` is told each wait (the stream prints it and counts it). ``conn_box``
    holds a connection to reuse across calls (``[conn]`` or ``[None]``).
    """
    pg = _psycopg()
    box = conn_box if conn_box is not None else [None]
    delay = 0.5
    waited_since: Optional[float] = None
    while True:
        try:
            conn = box[0]
            if conn is None or conn.closed:
                conn = box[0] = connect(dsn)
            try:
                result = work(conn)
                conn.commit()
                return result
            except BaseException:
                if not conn.closed:
                    try:
                        conn.rollback()
                    except pg.Error:
                        pass
                raise
        except (HotStoreUnavailable, pg.OperationalError, pg.InterfaceError) as exc:
            if box[0] is not None:
                try:
                    box[0].close()
                except pg.Error:
                    pass
                box[0] = None
            now = time.monotonic()
            waited_since = waited_since if waited_since is not None else now
            if give_up_after is not None and now - waited_since > give_up_after:
                raise HotStoreUnavailable(
                    f"PostgreSQL at {redact(dsn)} unreachable for {now - waited_since:.0f} s"
                ) from exc
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            on_wait(
                f"PostgreSQL at {redact(dsn)} unavailable ({detail}); nothing is lost, retrying in {delay:.1f} s", delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def check_dsn(dsn: str) -> str:
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"LAKE_HOT_DSN must be a postgresql:// URL, not {redact(dsn)!r}")
    return dsn
