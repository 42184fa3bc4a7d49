"""``lake status``: what is running, how far behind each layer is, and what failed last.

Everything is read where the lake keeps it, so it works from any shell:
the embedded broker's and Mosquitto's pid files, the ingest's lease
(``_leases/ingest-<topic>.json``), the local Airflow's pid files, the hot
store's ``stream_offsets`` (the stream commits its offsets there), the
freshness of every layer (``freshness``), the quality gates' results
(``_quality/results/**``: the newest that failed) and the ingest's gaps
(``_ledger/gaps``). A source that cannot be read is named, never fatal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import pyarrow.fs as pafs

from lake.edge import mosquitto
from lake.local.airflow import stack as airflow_stack
from lake.observability.freshness import LayerFreshness, lake_freshness, newest_kafka_record_ms
from lake.read_api.hot_reader import HotReader
from lake_core import hot_store
from lake_core.lease import LeaseRecord, lease_path
from lake_core.processes import pid_alive, running_broker
from lake_core.services import running_services
from lake_core.settings import Settings
from lake_core.storage import filesystem, fs_path
from lake_schemas import LakePaths
from lake_schemas.paths import join

__all__ = ["Component", "Failure", "LakeStatus", "lake_status", "render"]


@dataclass
class Component:
    name: str
    state: str  # running | stopped | stale | unknown
    detail: str = ""


@dataclass
class Failure:
    what: str
    when: str  # ISO 8601 UTC
    detail: str


@dataclass
class LakeStatus:
    components: list[Component] = field(default_factory=list)
    freshness: list[LayerFreshness] = field(default_factory=list)
    newest_kafka_ms: Optional[int] = None
    failures: list[Failure] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ingest(settings: Settings) -> Component:
    fs, _ = filesystem(settings.lake_root)
    path = fs_path(settings.lake_root, lease_path(settings.lake_root, f"ingest-{settings.topic}"))
    try:
        with fs.open_input_stream(path) as f:
            record = LeaseRecord.parse(f.read())
    except (FileNotFoundError, OSError):
        record = None
    if record is None:
        return Component("ingest", "stopped", f"no lease for {settings.topic}")
    expired = record.expires_at < time.time()
    alive = record.host == socket.gethostname() and pid_alive(record.pid)
    if record.host == socket.gethostname() and not alive:
        return Component("ingest", "stopped", f"last run {record.describe()}, process gone")
    return Component("ingest", "stale" if expired else "running", record.describe())


def _stream(dsn: Optional[str], topic: str) -> Component:
    if dsn is None:
        return Component("stream", "unknown", "LAKE_HOT_DSN not set")
    try:
        with contextlib.closing(hot_store.connect(dsn, timeout=2)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT extract(epoch FROM max(updated_at)), sum(next_offset) FROM hot.stream_offsets WHERE topic = %s",
                [topic],
            )
            updated, offsets = cur.fetchone()
            conn.rollback()
    except Exception as exc:  # no server, no schema yet
        return Component("stream", "unknown", f"hot store: {str(exc).strip().splitlines()[0]}")
    if updated is None:
        return Component("stream", "stopped", "never committed")
    age = time.time() - float(updated)
    state = "running" if age < 600 else "stopped"
    return Component("stream", state, f"last commit {_age(age)} ago, {int(offsets or 0):,} records consumed")


def _components(settings: Settings, dsn: Optional[str]) -> list[Component]:
    out = []
    broker = running_broker(settings.lake_root)
    if broker is not None and broker.is_running():
        out.append(Component("broker", "running", f"embedded, pid {broker.pid}, {broker.bootstrap}"))
    else:
        out.append(
            Component(
                "broker",
                "unknown" if "://" in settings.lake_root else "stopped",
                f"embedded not running; bootstrap {settings.bootstrap}",
            )
        )
    out.append(_ingest(settings))
    stream = _stream(dsn, settings.topic)
    announced = [r for r in running_services(settings.lake_root) if r.name == "stream"]
    if announced:  # the hot store's last commit says how far it got; the record says it is alive now
        r = announced[0]
        stream = Component("stream", "running", f"pid {r.pid}; {stream.detail}")
    out.append(stream)
    mqtt = mosquitto.running_mosquitto(settings)
    out.append(
        Component("mosquitto", "running", f"pid {mqtt.pid}, port {mqtt.port}")
        if mqtt is not None
        else Component("mosquitto", "stopped", "")
    )
    out += _services(settings.lake_root)
    try:
        states, url, _ = airflow_stack.status(settings.lake_root)
        running = [s for s in states if getattr(s, "pid", None)]
        if running:
            out.append(Component("airflow", "running", f"{len(running)} of {len(states)} components, {url or ''}"))
        else:
            out.append(Component("airflow", "stopped", ""))
    except Exception as exc:
        out.append(Component("airflow", "unknown", str(exc)))
    return out


# The foreground services announce themselves (lake_core.services); each kind is listed even when
# none runs, so "the gateway is down" reads as plainly as "the ingest is down".
_SERVICES = ("gateway", "bridge", "serve")


def _services(lake_root: str) -> list[Component]:
    records = running_services(lake_root)
    out = []
    for name in _SERVICES + tuple(sorted({r.name for r in records} - set(_SERVICES) - {"stream"})):
        mine = [r for r in records if r.name == name]
        if not mine:
            out.append(Component(name, "stopped", ""))
        for r in mine:
            where = "" if r.host == socket.gethostname() else f" on {r.host}"
            metrics = f", metrics {r.metrics}" if r.metrics else ""
            age = _age(time.time() - r.started_at)
            out.append(Component(name, "running", f"pid {r.pid}{where}, up {age}, {r.detail}{metrics}"))
    return out


def _failed_gates(lake_root: str, limit: int) -> list[Failure]:
    fs, _ = filesystem(lake_root)
    base = fs_path(lake_root, join(LakePaths(lake_root).quality, "results"))
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = sorted(
        (i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".json")),
        key=lambda i: i.base_name,  # validated_at, sortable
        reverse=True,
    )
    failures = []
    for info in files[:500]:  # the newest results: a failure older than 500 runs is not "last"
        try:
            with fs.open_input_stream(info.path) as f:
                body = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if body.get("success") is False:
            failures.append(
                Failure(
                    f"{body.get('layer')} gate {body.get('key')}",
                    _iso_from_stamp(info.base_name[: -len(".json")]),
                    "failed: " + ", ".join(body.get("failed") or []),
                )
            )
            if len(failures) >= limit:
                break
    return failures


def _gaps(lake_root: str, limit: int) -> list[Failure]:
    fs, _ = filesystem(lake_root)
    base = fs_path(lake_root, join(lake_root, "_ledger", "gaps"))
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.mtime or 0, reverse=True)
    return [
        Failure(
            "ingest gap", _iso(i.mtime.timestamp()) if i.mtime else "?", f"records lost to retention: {i.base_name}"
        )
        for i in files[:limit]
    ]


def lake_status(settings: Settings, hot_dsn: Optional[str], kafka_timeout: float = 3.0) -> LakeStatus:
    status = LakeStatus()
    status.components = _components(settings, hot_dsn)
    try:
        status.newest_kafka_ms = newest_kafka_record_ms(settings.bootstrap, settings.topic, timeout=kafka_timeout)
    except Exception as exc:
        status.unreadable.append(f"kafka at {settings.bootstrap}: {exc}")
    hot = None
    if hot_dsn is not None:
        reader = HotReader(hot_dsn, max_connections=1)
        try:
            hot = reader.stats(int(time.time() * 1000) - 3_600_000)
        except Exception as exc:
            status.unreadable.append(f"hot store: {str(exc).strip().splitlines()[0]}")
        finally:
            reader.close()
    status.freshness = lake_freshness(settings.lake_root, status.newest_kafka_ms, hot)
    for source, read in (("quality results", _failed_gates), ("ingest gaps", _gaps)):
        try:
            status.failures += read(settings.lake_root, 5)
        except OSError as exc:
            status.unreadable.append(f"{source}: {exc}")
    status.failures.sort(key=lambda f: f.when, reverse=True)
    return status


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_ms(ms: Optional[int]) -> str:
    return "-" if ms is None else _iso(ms / 1000)


def _iso_from_stamp(stamp: str) -> str:
    try:
        return _iso(dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp())
    except ValueError:
        return stamp


def render(status: LakeStatus, now: Optional[float] = None) -> str:
    """One screen of text."""
    now = time.time() if now is None else now
    lines = ["RUNNING"]
    for c in status.components:
        lines.append(f"  {c.name:<10} {c.state:<8} {c.detail}")
    newest = status.newest_kafka_ms
    lines.append("")
    lines.append(f"FRESHNESS  (newest Kafka record: {_iso_ms(newest)})")
    lines.append(f"  {'layer':<7} {'holds up to':<21} {'behind topic':<13} {'last write':<11} detail")
    for layer in status.freshness:
        last = None if layer.last_commit_s is None else now - layer.last_commit_s
        detail = layer.detail
        if layer.oldest_open_ms is not None:
            detail += f"; oldest open hour {_iso_ms(layer.oldest_open_ms)[:13]}"
        lines.append(
            f"  {layer.layer:<7} {_iso_ms(layer.published_until_ms):<21} {_age(layer.behind_s):<13} "
            f"{_age(last) + ' ago' if last is not None else '-':<11} {detail}"
        )
    lines.append("")
    lines.append("LAST FAILURES" if status.failures else "LAST FAILURES  none recorded")
    for f in status.failures[:5]:
        lines.append(f"  {f.when}  {f.what}: {f.detail}")
    for source in status.unreadable:
        lines.append(f"  (could not read {source})")
    return "\n".join(lines)
