"""Offsets that go backwards (a restarted embedded broker, a recreated topic) stop the ingest with exit 3
until ``--new-generation``; retention gaps are recorded and skipped. Real brokers, real files."""

from __future__ import annotations

import glob
import os

import pytest

from beam_pipelines.ingest.bronze_state import BronzeStore
from lake.cli import main
from lake.local import broker as embedded
from lake_core import kafka_admin
from lake_core.processes import free_port
from lake_core.settings import Settings
from lake_schemas import BronzeFileName
from lake_schemas.paths import HOUR_MS
from support.ingest_helpers import T0, offsets_held, produce, rows_by_offset, snapshot

PARTITIONS = 2


@pytest.fixture
def own_broker(tmp_path):
    """A broker of the test's own, to restart (it keeps topics in memory: a restart loses them)."""
    state = str(tmp_path / "broker")
    port = free_port()

    def start():
        info = embedded.start_broker(state, port=port, partitions=PARTITIONS)
        kafka_admin.ensure_topics(info.bootstrap, ["t", "t-dlq"], partitions=PARTITIONS)
        return info.bootstrap

    yield start, lambda: embedded.stop_broker(state)
    embedded.stop_broker(state)


def _messages(count: int, start_ms: int, seed: str) -> list:
    return [
        (
            f"V{i % 3}".encode(),
            snapshot(f"V{i % 3}", start_ms + i * 1000, seed=seed),
            start_ms + i * 1000,
            i % PARTITIONS,
        )
        for i in range(count)
    ]


def _ingest(root: str, bootstrap: str, *extra: str) -> int:
    return main(
        [
            "ingest",
            "--lake-root",
            root,
            "--bootstrap",
            bootstrap,
            "--topic",
            "t",
            "--until-idle",
            "0.5",
            "--no-progress",
            *extra,
        ]
    )


@pytest.mark.kafka_long
@pytest.mark.parametrize("second_run", [30, 60, 90], ids=["fewer", "as many", "more"])
def test_a_restarted_broker_stops_the_ingest_until_a_new_generation(own_broker, tmp_path, capsys, second_run):
    """The repro: after a broker restart the new offsets were below Bronze's and silently discarded."""
    start, stop = own_broker
    root = str(tmp_path / "lake")
    bootstrap = start()
    settings = Settings(root, bootstrap, "t", "t-dlq")
    first = produce(settings, _messages(60, T0, "a"))
    assert _ingest(root, bootstrap) == 0
    before = sorted(glob.glob(f"{root}/bronze/**/*.parquet", recursive=True))
    stop()
    bootstrap = start()
    second = produce(Settings(root, bootstrap, "t", "t-dlq"), _messages(second_run, T0 + HOUR_MS, "b"))
    capsys.readouterr()

    assert _ingest(root, bootstrap) == 3
    err = capsys.readouterr().err.strip()
    assert "went backwards" in err and "--new-generation" in err and len(err.splitlines()) == 1
    for p in range(PARTITIONS):
        assert f"partition {p}: Bronze resumes at offset 30" in err
    assert sorted(glob.glob(f"{root}/bronze/**/*.parquet", recursive=True)) == before  # nothing written

    assert _ingest(root, bootstrap, "--new-generation") == 0
    assert "started Bronze generation 1" in capsys.readouterr().err
    new = [f for f in glob.glob(f"{root}/bronze/**/*.parquet", recursive=True) if f not in before]
    names = [BronzeFileName.parse(os.path.basename(f)) for f in new]
    assert names and all(n.generation == 1 for n in names)
    assert all(os.path.basename(f).startswith("g0001-p") for f in new)
    payloads = sorted(r["payload"] for r in rows_by_offset_all(root))
    assert payloads == sorted(v.decode() for v in [*first.values(), *second.values()])  # every record, once
    assert _ingest(root, bootstrap) == 0  # the new generation resumes where it stopped
    assert len(rows_by_offset_all(root)) == len(first) + len(second)


def rows_by_offset_all(root: str) -> list:
    import pyarrow.parquet as pq

    rows = []
    for path in glob.glob(f"{root}/bronze/telemetry/**/*.parquet", recursive=True):
        rows += pq.read_table(path).to_pylist()
    return rows


def test_a_recorded_gap_is_skipped_where_the_ledger_reads_it(settings):
    """Retention deleted offsets before they were read: the embedded broker cannot delete records, so the
    gap is recorded as the ingest would (BronzeStore.record_gap) and the resume offset must move past it."""
    produce(settings, [(b"V1", snapshot("V1", T0 + i), T0 + i, 0) for i in range(5)])
    store = BronzeStore(settings.lake_root)
    path = store.record_gap(0, settings.topic, 0, 0, 2, T0)
    assert path.endswith("_ledger/gaps/g0000-p0000-00000000000000000000-00000000000000000002.json")
    assert store.state(4).next_offsets[0] == 3
    assert store.record_gap(0, settings.topic, 0, 0, 2, T0) == path  # idempotent
    assert (
        main(
            [
                "ingest",
                "--lake-root",
                settings.lake_root,
                "--bootstrap",
                settings.bootstrap,
                "--topic",
                settings.topic,
                "--until-idle",
                "0.5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert sorted(o for p, o in offsets_held(settings)) == [3, 4]
    [gap] = store.gaps()
    assert gap["records"] == 3 and gap["partition"] == 0 and gap["hour"] == "2026-03-01T08"


def test_an_empty_or_unreadable_file_is_a_half_written_group(settings, capsys):
    """A power cut after the rename but before the data reached the disk: every later start failed."""
    produce(settings, [(b"V1", snapshot("V1", T0 + i), T0 + i, 0) for i in range(6)])
    assert (
        main(
            [
                "ingest",
                "--lake-root",
                settings.lake_root,
                "--bootstrap",
                settings.bootstrap,
                "--topic",
                settings.topic,
                "--until-idle",
                "0.5",
                "--no-progress",
            ]
        )
        == 0
    )
    [path] = glob.glob(f"{settings.lake_root}/bronze/telemetry/**/p0000-*.parquet", recursive=True)
    for damage in (b"", b"PAR1 torn"):
        with open(path, "wb") as f:
            f.write(damage)
        assert (
            main(
                [
                    "ingest",
                    "--lake-root",
                    settings.lake_root,
                    "--bootstrap",
                    settings.bootstrap,
                    "--topic",
                    settings.topic,
                    "--until-idle",
                    "0.5",
                    "--no-progress",
                ]
            )
            == 0
        )
        assert "recovered: deleted 1 half-committed file" in capsys.readouterr().err
        assert sorted(o for p, o in offsets_held(settings)) == list(range(6))
        [path] = glob.glob(f"{settings.lake_root}/bronze/telemetry/**/p0000-*.parquet", recursive=True)
        assert rows_by_offset(settings, "bronze")


@pytest.mark.kafka_long
def test_two_generations_in_one_hour_pass_the_bronze_gate_and_reach_silver(own_broker, tmp_path, capsys):
    """Offsets repeat across generations: the gate's uniqueness and Silver take the generation into account."""
    start, stop = own_broker
    root = str(tmp_path / "lake")
    bootstrap = start()
    first = produce(Settings(root, bootstrap, "t", "t-dlq"), _messages(20, T0, "a"))
    follow = [
        "ingest",
        "--lake-root",
        root,
        "--bootstrap",
        bootstrap,
        "--topic",
        "t",
        "--follow",
        "--max-seconds",
        "3",
        "--idle-flush",
        "0.5",
        "--no-progress",
    ]
    assert main(follow) == 0  # hour 08 stays open: nothing passed its end
    stop()
    bootstrap = start()
    second = produce(Settings(root, bootstrap, "t", "t-dlq"), _messages(20, T0 + 600_000, "b"))
    assert _ingest(root, bootstrap, "--new-generation") == 0
    hour8 = glob.glob(f"{root}/bronze/telemetry/year=2026/month=03/day=01/hour=08/*.parquet")
    assert {BronzeFileName.parse(os.path.basename(f)).generation for f in hour8} == {0, 1}
    capsys.readouterr()
    assert main(["validate", "bronze", "--lake-root", root, "--hour", "2026-03-01T08"]) == 0
    assert main(["silver", "--lake-root", root, "--hour", "2026-03-01T08"]) == 0
    assert f"{len(first) + len(second):,} new silver rows" in capsys.readouterr().out
