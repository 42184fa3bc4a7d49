"""Where every table lives under ``LAKE_ROOT`` and how Bronze files are named.

``LAKE_ROOT`` is a path or a ``file://``, ``s3://`` or ``gs://`` URI; all
paths here are plain strings joined with ``/`` so they work for both.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import NamedTuple, Optional

# Table name (as analysts use it in SQL, contract section 6) -> relative path.
TABLES: dict[str, str] = {
    "bronze_telemetry": "bronze/telemetry",
    "bronze_rejects": "bronze/_rejects",
    "silver_telemetry": "silver/telemetry",
    "silver_quarantine": "silver/quarantine",
    "gold_vehicle_hourly": "gold/vehicle_hourly",
    "gold_zone_hourly": "gold/zone_hourly",
    "gold_vehicle_state": "gold/vehicle_state",
    "gold_alerts": "gold/alerts",
    "dims_vehicles": "dims/vehicles",
    "ledger_hours": "_ledger/hours",
}
#: The tables stored as plain hive-partitioned Parquet; the rest are Delta.
PARQUET_TABLES = frozenset({"bronze_telemetry", "bronze_rejects"})

COMPLETE_MARKER = "_COMPLETE"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HOUR_FORMAT = "%Y-%m-%dT%H"


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


def hour_of_ms(epoch_ms: int) -> int:
    """The start of the UTC hour holding ``epoch_ms``, in epoch ms."""
    return epoch_ms - epoch_ms % HOUR_MS


def parse_hour(text: str) -> _dt.datetime:
    """``2026-03-01T08`` (the form of ``lake silver --hour``) -> aware datetime."""
    try:
        return _dt.datetime.strptime(text, HOUR_FORMAT).replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise ValueError(f"not an hour: {text!r} (expected YYYY-MM-DDTHH, e.g. 2026-03-01T08)") from None


def format_hour(hour_start_ms: int) -> str:
    """Inverse of ``parse_hour``: epoch ms -> ``2026-03-01T08``."""
    return _dt.datetime.fromtimestamp(hour_start_ms / 1000, tz=_dt.timezone.utc).strftime(HOUR_FORMAT)


def hour_partition(hour_start_ms: int) -> str:
    """``year=YYYY/month=MM/day=DD/hour=HH`` of the UTC hour starting at ``hour_start_ms``."""
    t = _dt.datetime.fromtimestamp(hour_start_ms / 1000, tz=_dt.timezone.utc)
    return f"year={t:%Y}/month={t:%m}/day={t:%d}/hour={t:%H}"


_PARTITION_RE = re.compile(r"year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})")


def partition_hour_ms(partition: str) -> int:
    """Inverse of ``hour_partition``."""
    m = _PARTITION_RE.search(partition)
    if m is None:
        raise ValueError(f"not an hour partition: {partition!r}")
    y, mo, d, h = (int(g) for g in m.groups())
    return int(_dt.datetime(y, mo, d, h, tzinfo=_dt.timezone.utc).timestamp() * 1000)


@dataclass(frozen=True)
class LakePaths:
    root: str

    def table(self, name: str) -> str:
        return join(self.root, TABLES[name])

    @property
    def bronze(self) -> str:
        return self.table("bronze_telemetry")

    @property
    def rejects(self) -> str:
        return self.table("bronze_rejects")

    def bronze_hour(self, hour_start_ms: int) -> str:
        return join(self.bronze, hour_partition(hour_start_ms))

    def rejects_hour(self, hour_start_ms: int) -> str:
        return join(self.rejects, hour_partition(hour_start_ms))

    def complete_marker(self, hour_start_ms: int) -> str:
        return join(self.bronze_hour(hour_start_ms), COMPLETE_MARKER)

    @property
    def quality(self) -> str:
        return join(self.root, "_quality")

    @property
    def local_state(self) -> str:
        """Machine-local state (broker pid, Airflow home); never data."""
        return join(self.root, "_local")


class BronzeFileName(NamedTuple):
    """Bronze and rejects file names: ``[g{generation}-]p{partition}-{first}-{last}-{i}of{n}.parquet``.

    One ingest pass writes, for each Kafka partition, ``n`` files (one per
    hour it touched, in Bronze and in rejects) that all carry the offset range
    ``first..last`` the pass consumed. A group with fewer than ``n`` files is
    a pass killed while committing: recovery deletes it and reads the range
    again, so every offset lands exactly once.

    The generation counts the times the topic's offsets started again
    (``lake ingest --new-generation``, after the topic was recreated or the
    broker lost its log): generation 0 has no prefix; a later one's names
    start with ``g{generation}-`` and can never equal an earlier one's.
    """

    partition: int
    first_offset: int
    last_offset: int
    # ``i of n``: these two shadow tuple.index and tuple.count, which nothing here calls.
    index: int  # type: ignore[assignment]
    count: int  # type: ignore[assignment]
    generation: int = 0

    def __str__(self) -> str:
        prefix = f"g{self.generation:04d}-" if self.generation else ""
        return (
            f"{prefix}p{self.partition:04d}-{self.first_offset:020d}-{self.last_offset:020d}"
            f"-{self.index}of{self.count}.parquet"
        )

    @classmethod
    def parse(cls, name: str) -> Optional["BronzeFileName"]:
        m = _FILE_RE.fullmatch(name)
        if m is None:
            return None
        generation, partition, first, last, index, count = m.groups()
        return cls(int(partition), int(first), int(last), int(index), int(count), int(generation or 0))


_FILE_RE = re.compile(r"(?:g(\d+)-)?p(\d+)-(\d+)-(\d+)-(\d+)of(\d+)\.parquet")
