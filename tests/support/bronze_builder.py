"""Build a Bronze lake by hand, as the ingest would have written it (no broker).

    b = BronzeBuilder(lake_root)
    b.snapshot("V1", "e1", ts_ms, ingest_ms, location={"lat": 52.0, "lon": 13.0})
    b.signal("S1", "soc", ts_ms, ingest_ms, int_value=80)
    b.write()   # one file per (hour, Kafka partition), plus _COMPLETE per hour

Offsets are given per partition in the order rows are added, unless a row
names its own; ``event_ts`` is what the ingest's validation parses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from lake_schemas import BRONZE_SCHEMA, BronzeFileName, LakePaths
from lake_schemas.paths import hour_of_ms

T0 = 1772352000000  # 2026-03-01T08:00:00Z
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def ms(text: str) -> int:
    """``"08:00:10"`` on 2026-03-01, or a full ISO time, as epoch ms."""
    if len(text) <= 12:
        text = f"2026-03-01T{text}"
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


class BronzeBuilder:
    def __init__(self, lake_root: str, topic: str = "vehicle-telemetry"):
        self.lake_root = lake_root
        self.topic = topic
        self.rows: list[dict] = []
        self._next_offset: dict = defaultdict(int)

    def raw(
        self,
        payload: str,
        vehicle_id: Optional[str],
        event_ms: Optional[int],
        ingest_ms: int,
        partition: int = 0,
        offset: Optional[int] = None,
        hour_ms: Optional[int] = None,
    ) -> dict:
        """Add one Bronze row; ``hour_ms`` overrides the hour it is filed under (a late record)."""
        if offset is None:
            offset = self._next_offset[partition]
        self._next_offset[partition] = max(self._next_offset[partition], offset + 1)
        row = {
            "kafka_topic": self.topic,
            "kafka_partition": partition,
            "kafka_offset": offset,
            "ingest_ts": ingest_ms,
            "key": vehicle_id,
            "payload": payload,
            "vehicle_id": vehicle_id,
            "event_ts": event_ms,
            "_hour": hour_of_ms(ingest_ms) if hour_ms is None else hour_ms,
        }
        self.rows.append(row)
        return row

    def snapshot(
        self,
        vehicle_id: str,
        event_id: str,
        ts_ms: int,
        ingest_ms: int,
        partition: int = 0,
        offset: Optional[int] = None,
        ts_text: Optional[str] = None,
        **groups,
    ) -> dict:
        message = {
            "schema_version": 1,
            "event_id": event_id,
            "vehicle_id": vehicle_id,
            "ts": ts_text if ts_text is not None else ts_ms,
            **groups,
        }
        return self.raw(json.dumps(message), vehicle_id, ts_ms, ingest_ms, partition, offset)

    def signal(
        self,
        did: str,
        name: str,
        ts_ms: int,
        ingest_ms: int,
        partition: int = 0,
        offset: Optional[int] = None,
        float_value=None,
        int_value=None,
    ) -> dict:
        message = {"did": did, "timestamp": ts_ms, "name": name}
        if float_value is not None:
            message["float_value"] = float_value
        if int_value is not None:
            message["int_value"] = int_value
        return self.raw(json.dumps(message), did, ts_ms, ingest_ms, partition, offset)

    def write(self, complete: bool = True) -> list[str]:
        """Write every row added so far; return the files written."""
        groups = defaultdict(list)
        for row in self.rows:
            groups[(row["_hour"], row["kafka_partition"])].append(row)
        written, by_hour = [], defaultdict(list)
        for (hour, partition), rows in sorted(groups.items()):
            rows.sort(key=lambda r: r["kafka_offset"])
            table = pa.Table.from_pylist(
                [{k: v for k, v in r.items() if k != "_hour"} for r in rows], schema=BRONZE_SCHEMA
            )
            name = str(BronzeFileName(partition, rows[0]["kafka_offset"], rows[-1]["kafka_offset"], 1, 1))
            directory = LakePaths(self.lake_root).bronze_hour(hour)
            os.makedirs(directory, exist_ok=True)
            pq.write_table(table, f"{directory}/{name}")
            written.append(f"{directory}/{name}")
            by_hour[hour].append(name)
        if complete:
            for hour in by_hour:
                directory = LakePaths(self.lake_root).bronze_hour(hour)
                names = sorted(n for n in os.listdir(directory) if n.endswith(".parquet"))
                files = [
                    {"table": "bronze_telemetry", "file": n, "rows": pq.read_metadata(f"{directory}/{n}").num_rows}
                    for n in names
                ]
                marker = {"hour": hour, "files": files}
                with open(f"{directory}/_COMPLETE", "w") as f:
                    json.dump(marker, f)
        self.rows = []
        return written
