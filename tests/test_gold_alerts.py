"""``gold_alerts``: the daily copy of the hot store's alerts into Delta, gated, idempotent, queryable."""

from __future__ import annotations

import datetime as dt

import pytest

from lake.query import query
from lake_core import hot_store
from lake_core.errors import QualityGateFailed
from lake_core.gold_alerts import alerts_of_day, publish_alerts_day
from support.hot_fleet import fresh_hot_store

DAY = dt.date(2026, 3, 1)


def _alerts(dsn, rows):
    conn = hot_store.connect(dsn)
    hot_store.migrate(conn)
    with conn.cursor() as cur:
        hot_store.ensure_day_partitions(cur, [DAY, DAY + dt.timedelta(days=1)], set())
        hot_store.upsert(cur, hot_store.ALERTS, rows)
    conn.commit()
    conn.close()


def _row(aid, vehicle, rule, opened, resolved=None):
    return (aid, vehicle, rule, "warning", opened, resolved, {"soc_pct": 12.0})


def test_the_days_alerts_land_in_gold_alerts_once_and_a_rerun_changes_nothing(tmp_path):
    with fresh_hot_store() as dsn:
        _alerts(
            dsn,
            [
                _row("00000000-0000-0000-0000-000000000001", "V1", "low_battery", "2026-03-01 08:00:00+00",
                     "2026-03-01 09:00:00+00"),
                _row("00000000-0000-0000-0000-000000000002", "V2", "offline", "2026-03-01 23:59:59.999+00"),
                _row("00000000-0000-0000-0000-000000000003", "V3", "geofence", "2026-03-02 00:00:00+00"),
            ],
        )  # fmt: skip
        root = str(tmp_path / "lake")
        assert publish_alerts_day(dsn, root, DAY) == 2
        assert publish_alerts_day(dsn, root, DAY) == 2
        got = query(
            "SELECT vehicle_id, rule, resolved_at IS NULL AS open, event_date FROM gold_alerts ORDER BY 1", root
        )
        assert got.to_pylist() == [
            {"vehicle_id": "V1", "rule": "low_battery", "open": False, "event_date": DAY},
            {"vehicle_id": "V2", "rule": "offline", "open": True, "event_date": DAY},
        ]


def test_a_day_failing_its_gate_publishes_nothing(tmp_path):
    with fresh_hot_store() as dsn:
        _alerts(dsn, [_row("00000000-0000-0000-0000-000000000009", "V9", "low_battery", "2026-03-01 08:00:00+00",
                           "2026-03-01 07:00:00+00")])  # fmt: skip
        with pytest.raises(QualityGateFailed, match="resolved_at before opened_at"):
            publish_alerts_day(dsn, str(tmp_path / "lake"), DAY)
        assert not (tmp_path / "lake" / "gold" / "alerts").exists()


def test_no_hot_store_is_an_empty_day():
    assert alerts_of_day("postgresql://postgres@127.0.0.1:5432/lake_hot_never_created_x", DAY).num_rows == 0
