"""One contract, one definition: the message structs and the Silver columns come from
``lake_schemas.fields``, every column of every table has a meaning, and ``docs/tables.md``
is what ``python -m lake_schemas.reference`` writes."""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import replace
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from lake_schemas import catalog, hot, messages, reference, tables
from lake_schemas.fields import GROUPS, MESSAGE_FIELDS, SIGNALS, Kind
from lake_schemas.paths import TABLES
from lake_schemas.rules import QUARANTINE_RULES

REPO = Path(__file__).resolve().parent.parent

#: Contract section 3's measurement columns, in its order (a reordering would break every Delta table).
CONTRACT_MEASUREMENTS = (
    "lat lon alt_m accuracy_m soc_pct voltage_v current_a battery_temp_c charging speed_kmh heading_deg "
    "accel_ms2 locked in_use ignition trip_id odometer_km error_codes"
).split()


def _schemas_of(module: object) -> dict[str, pa.Schema]:
    return {name: value for name, value in vars(module).items() if isinstance(value, pa.Schema)}


def _undocumented(doc: catalog.TableDoc) -> list[str]:
    """Columns of the table without a meaning, and meanings of columns the table does not have."""
    missing = [f.name for f in doc.schema if not doc.columns.get(f.name, "").strip()]
    stale = [name for name in doc.columns if name not in doc.schema.names]
    return missing + [f"{name} (not a column)" for name in stale]


# --------------------------------------------------------------------------
# Every table and column is described
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name, schema", sorted({**_schemas_of(tables), **_schemas_of(hot)}.items()))
def test_every_schema_of_the_package_is_in_the_catalog(name, schema):
    assert any(doc.schema is schema for doc in catalog.TABLE_DOCS), f"{name} has no TableDoc in lake_schemas.catalog"


@pytest.mark.parametrize("doc", catalog.TABLE_DOCS, ids=lambda d: d.name)
def test_every_column_has_a_meaning(doc):
    assert _undocumented(doc) == []
    assert doc.summary.strip() and doc.location


def test_the_coverage_check_bites():
    silver = next(d for d in catalog.TABLE_DOCS if d.name == "silver_telemetry")
    without = replace(silver, columns={k: v for k, v in silver.columns.items() if k != "soc_pct"})
    assert _undocumented(without) == ["soc_pct"]
    extra = replace(silver, columns={**silver.columns, "soc": "a column that is not there"})
    assert _undocumented(extra) == ["soc (not a column)"]


def test_table_names_are_the_contracts():
    sql = [d.name for d in catalog.TABLE_DOCS if d.sql]
    assert len(set(sql)) == len(sql) and set(sql) == set(TABLES)
    assert all(d.location == TABLES[d.name] for d in catalog.TABLE_DOCS if d.sql)


def test_envelope_fields_are_described():
    groups = set(GROUPS)
    assert [n for n in messages.Snapshot.__struct_fields__ if n not in groups] == list(catalog.SNAPSHOT_DOCS)
    assert list(messages.Signal.__struct_fields__) == list(catalog.SIGNAL_DOCS)


def test_every_quarantine_rule_is_shown_on_a_column():
    shown = {r for c in tables.SILVER_SCHEMA.names for r in reference.column_rules("silver_telemetry", c)}
    for rule in QUARANTINE_RULES:
        assert any(f"`{rule.reason.value}`" in text for text in shown), rule.reason


# --------------------------------------------------------------------------
# docs/tables.md is generated and up to date
# --------------------------------------------------------------------------
def test_the_generated_reference_is_up_to_date():
    done = subprocess.run(
        [sys.executable, "-m", "lake_schemas.reference", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr + "\nrun `python -m lake_schemas.reference` and commit docs/tables.md"
    assert reference.DEFAULT_OUTPUT == REPO / "docs" / "tables.md"


def test_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path, capsys):
    out = tmp_path / "tables.md"
    assert reference.main(["--check", "--output", str(out)]) == 1  # missing
    out.write_text(reference.render().replace("battery state of charge", "state of charge"), encoding="utf-8")
    assert reference.main(["--check", "--output", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    assert reference.main(["--output", str(out)]) == 0
    assert reference.main(["--check", "--output", str(out)]) == 0


def test_the_reference_names_every_table_and_column():
    text = reference.render()
    for doc in catalog.TABLE_DOCS:
        assert f"### `{doc.name}`" in text
        for f in doc.schema:
            assert f"| `{f.name}` | `{f.type}` | {'yes' if f.nullable else 'no'} |" in text, (doc.name, f.name)


# --------------------------------------------------------------------------
# The structs and the Silver schema agree, field by field
# --------------------------------------------------------------------------
def test_silver_measurements_are_the_message_fields_in_contract_order():
    assert [f.column for f in MESSAGE_FIELDS] == CONTRACT_MEASUREMENTS
    names = tables.SILVER_SCHEMA.names
    start = names.index("source_shape") + 1
    assert names[start : start + len(MESSAGE_FIELDS)] == CONTRACT_MEASUREMENTS
    assert tables.MEASUREMENT_FIELDS == [tables.SILVER_SCHEMA.field(c) for c in CONTRACT_MEASUREMENTS]


@pytest.mark.parametrize("f", MESSAGE_FIELDS, ids=lambda f: f"{f.group}.{f.name}")
def test_struct_field_and_silver_column_agree(f):
    struct = typing.get_type_hints(messages.Snapshot)[f.group]
    group = typing.get_args(struct)[0]  # Optional[Group]
    hints = typing.get_type_hints(group, include_extras=True)
    assert hints[f.name] == f.kind.annotation
    column = tables.SILVER_SCHEMA.field(f.column)
    assert column.type == f.kind.arrow_type and column.nullable
    for schema in (tables.QUARANTINE_SCHEMA, tables.GOLD_VEHICLE_STATE_SCHEMA):
        assert schema.field(f.column).type == f.kind.arrow_type
    assert messages.SNAPSHOT_COLUMNS[(f.group, f.name)] == f.column


def test_each_group_struct_holds_exactly_its_fields_in_order():
    snapshot_groups = [n for n in messages.Snapshot.__struct_fields__ if n in GROUPS]
    assert snapshot_groups == list(GROUPS)
    for group in GROUPS:
        struct = typing.get_args(typing.get_type_hints(messages.Snapshot)[group])[0]
        assert struct.__struct_fields__ == tuple(f.name for f in MESSAGE_FIELDS if f.group == group)
        assert struct.__struct_defaults__ == (None,) * len(struct.__struct_fields__)
        config = struct.__struct_config__
        assert config.omit_defaults and not config.gc, group  # the decode's speed depends on both
        assert struct.__module__ == "lake_schemas.messages" and getattr(messages, struct.__name__) is struct


_SAMPLE = {Kind.NUMBER: 12.5, Kind.BOOLEAN: True, Kind.TEXT: "T-88", Kind.TEXT_LIST: ["E12", "E7"]}


def _full_snapshot() -> dict:
    return {g: {f.name: _SAMPLE[f.kind] for f in MESSAGE_FIELDS if f.group == g} for g in GROUPS}


def test_a_decoded_snapshot_fills_the_silver_columns_as_typed():
    body = _full_snapshot()
    snap = msgspec.json.decode(msgspec.json.encode(body), type=messages.Snapshot)
    row = {column: getattr(getattr(snap, g), n) for (g, n), column in messages.SNAPSHOT_COLUMNS.items()}
    table = pa.Table.from_pylist([row], schema=pa.schema(tables.MEASUREMENT_FIELDS))
    assert table.to_pylist() == [{f.column: _SAMPLE[f.kind] for f in MESSAGE_FIELDS}]
    assert msgspec.json.decode(msgspec.json.encode(snap)) == body  # omit_defaults drops nothing that was set


def test_the_hot_path_reads_every_message_field():
    message = {"event_id": "e1", "vehicle_id": "V1", "ts": 1_772_352_000_000, **_full_snapshot()}
    event_id, columns, _ = hot.decode_fields(msgspec.json.encode(message), "snapshot")
    assert event_id == "e1" and columns == {f.column: _SAMPLE[f.kind] for f in MESSAGE_FIELDS}


def test_signals_fill_message_columns_of_their_kind():
    assert messages.SIGNAL_COLUMNS == {s.name: s.column for s in SIGNALS}
    for s in SIGNALS:
        kind = next(f.kind for f in MESSAGE_FIELDS if f.column == s.column)
        assert (kind is Kind.BOOLEAN) == s.boolean == (s.name in messages.BOOLEAN_SIGNALS), s
        assert kind in (Kind.NUMBER, Kind.BOOLEAN), s  # a signal carries a number
