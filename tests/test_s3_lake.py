"""The whole lake on ``s3://``, as a new user runs it: every step is a ``lake`` command (or an
``airflow dags test``) in its own process, configured only by ``LAKE_ROOT=s3://...`` and the
``AWS_*`` variables the compose stack uses, against moto's standalone S3 server (a real HTTP S3
API, started by the session fixture ``s3_endpoint``) and the session's real Kafka broker.

The story, run once by the module fixture (each step timed, printed at the end), then checked:
simulate -> ingest, a second ingest refused by the lease (a conditional PUT), SIGKILL in the
middle of a commit (when the kill falls between two groups, one file of the newest group is
deleted: the state a kill between two PUTs leaves), a restart refused until the killed lease
expires, a restart that takes over and finishes (nothing lost or doubled, every group whole,
``_COMPLETE`` per hour) -> two Silver hours committed at once (both land: Delta's commit is a
conditional PUT) -> Gold -> the gates' results and Data Docs in the bucket, ``lake validate`` -> ``lake query``
(the issue's query, joins across layers, json/csv) -> one hourly and one daily DAG run ->
``lake maintain`` -> ``lake forget``.

No rename on S3: each Bronze file is one PUT (or one multipart upload, which appears only when
completed), so a file is whole or absent; a group is whole once all ``n`` of its files exist, and
a restart deletes a group with fewer (``BronzeStore.recover``), as on disk.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import boto3
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable

from lake.local.airflow.runs import dags_test
from lake_core import kafka_admin
from lake_core.storage import filesystem
from lake_schemas import BronzeFileName, LakePaths
from lake_schemas.paths import COMPLETE_MARKER
from support.airflow_homes import fresh_airflow_home
from support.moto_s3 import new_bucket, s3_env

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

PARTITIONS = 4
H08, H09, DAY = "2026-03-01T08", "2026-03-01T09", "2026-03-01"
VEHICLES = 8
FORGOTTEN = "V000002"


def _lake(story, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lake.cli", *args], env=story.env, capture_output=True, text=True, timeout=timeout
    )
    story.times.append((" ".join(args[:3]), time.monotonic() - started))
    print(f"{story.times[-1][0]}: {story.times[-1][1]:.1f} s", flush=True)
    return done


def _ingest_cmd(*extra: str, small: bool = True) -> list:
    # small passes (200 KB per partition, some 600 messages): many commits, so a kill can land in one, and
    # groups of more than one file (a pass that met a bad message writes to Bronze and rejects) come early
    base = [sys.executable, "-m", "lake.cli", "ingest", "--no-progress"]
    return [*base, *(["--buffer-bytes", "200K", "--poll-batch", "100"] if small else []), *extra]


def _objects(story, prefix: str = "") -> list:
    fs, root = story.fs, story.path
    selector = pafs.FileSelector(f"{root}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True)
    return [i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]


def _bronze_groups(story) -> dict:
    """``(table, partition, first, last) -> (n, [names])`` of every Bronze and rejects file in the bucket."""
    found: dict = defaultdict(lambda: [0, []])
    for table in ("telemetry", "_rejects"):
        for info in _objects(story, f"bronze/{table}"):
            name = BronzeFileName.parse(info.base_name)
            if name is not None:
                entry = found[(name.partition, name.first_offset, name.last_offset)]
                entry[0] = name.count
                entry[1].append(info.path)
    return found


def _latest_multi_file_groups(story) -> dict:
    """``(partition, first, last) -> paths`` of each partition's latest group, where it has more than one file."""
    latest: dict = {}
    for key, (count, paths) in _bronze_groups(story).items():
        if key[0] not in latest or key[2] > latest[key[0]][0][2]:
            latest[key[0]] = (key, count, paths)
    return {key: paths for key, count, paths in latest.values() if count > 1}


def _half_done(story) -> int:
    return sum(1 for n, paths in _bronze_groups(story).values() if len(paths) < n)


def _offsets_held(story) -> Counter:
    held: Counter = Counter()
    for table in ("telemetry", "_rejects"):
        dataset = ds.dataset(
            f"{story.path}/bronze/{table}",
            filesystem=story.fs,
            format="parquet",
            partitioning="hive",
            ignore_prefixes=[".", "_"],
        )
        t = dataset.to_table(columns=["kafka_partition", "kafka_offset"])
        held.update(zip(t["kafka_partition"].to_pylist(), t["kafka_offset"].to_pylist()))
    return held


def _lease_key(story) -> str:
    return f"{story.key_prefix}/_leases/ingest-{story.topic}.json"


def _expire_lease(story) -> None:
    """What 120 s without renewal does to a killed ingest's lease (``DEFAULT_TTL_S``), without the wait."""
    s3 = boto3.client("s3", endpoint_url=story.endpoint, region_name="us-east-1")
    record = json.loads(s3.get_object(Bucket=story.bucket, Key=_lease_key(story))["Body"].read())
    record["expires_at"] = time.time() - 1
    s3.put_object(Bucket=story.bucket, Key=_lease_key(story), Body=json.dumps(record).encode())


def _wait(predicate, proc, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def _query(story, sql: str, fmt: str = "json"):
    done = _lake(story, "query", "--format", fmt, sql)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if fmt == "json" else done.stdout


def _delta(story, table: str):
    return DeltaTable(LakePaths(story.root).table(table))


@pytest.fixture(scope="module")
def story(s3_endpoint, kafka_bootstrap, tmp_path_factory):
    saved = {k: os.environ.get(k) for k in s3_env(s3_endpoint)}
    os.environ.update(s3_env(s3_endpoint))  # this process reads the bucket too, to check
    bucket = new_bucket(s3_endpoint)
    topic = f"t-s3-lake-{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic, f"{topic}-dlq"], partitions=PARTITIONS)
    root = f"s3://{bucket}/fleet"
    env = {**os.environ, **s3_env(s3_endpoint)}
    env.update(LAKE_ROOT=root, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, LAKE_TOPIC=topic)
    env.pop("LAKE_DLQ_TOPIC", None)  # <topic>-dlq
    fs, path = filesystem(root)
    st = SimpleNamespace(
        endpoint=s3_endpoint, bucket=bucket, key_prefix="fleet", topic=topic, root=root, env=env, fs=fs, path=path
    )
    st.times = []
    st.bootstrap = kafka_bootstrap

    # -- simulate: the fleet to Kafka, its registry to dims/vehicles on S3
    st.simulate = _lake(
        st,
        "simulate",
        "--vehicles",
        str(VEHICLES),
        "--duration",
        "2h",
        "--rate",
        "0.25",
        "--seed",
        "7",
        "--no-progress",
    )
    assert st.simulate.returncode == 0, st.simulate.stderr
    st.sent = int(re.search(r"sent ([\d,]+) messages", st.simulate.stdout).group(1).replace(",", ""))

    # -- ingest: a second one refused while the first runs; the first killed in the middle of a commit
    started = time.monotonic()
    first = subprocess.Popen(
        _ingest_cmd("--until-idle", "5"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    st.lease_seen = _wait(lambda: any(i.base_name.startswith("ingest-") for i in _objects(st, "_leases")), first)
    st.second = subprocess.run(_ingest_cmd("--until-idle", "1"), env=env, capture_output=True, text=True, timeout=120)
    st.first_pid = first.pid
    _wait(lambda: bool(_latest_multi_file_groups(st)), first)
    if first.poll() is None:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    first.stderr.close()
    held = _offsets_held(st)
    st.kill = {"held": len(held), "doubled": sum(1 for c in held.values() if c > 1), "half_done": _half_done(st)}
    if not st.kill["half_done"]:
        # The kill fell between two groups. What a kill between two PUTs of one group leaves (the store
        # has no partial object and no rename): the newest group with one file fewer.
        # (only a partition's latest group can be cut off: the next start resumes after it)
        key, paths = max(_latest_multi_file_groups(st).items(), key=lambda kv: kv[0][2])
        st.fs.delete_file(sorted(paths)[-1])
        st.kill["made_half"] = key
    st.kill["half_done_at_restart"] = _half_done(st)
    # at once: the killed ingest's lease has not expired (object stores have no flock)
    st.too_soon = subprocess.run(_ingest_cmd("--until-idle", "1"), env=env, capture_output=True, text=True, timeout=120)
    _expire_lease(st)
    st.ingest = subprocess.run(
        _ingest_cmd("--until-idle", "2", small=False), env=env, capture_output=True, text=True, timeout=300
    )
    st.times.append(("ingest (4 runs, 1 SIGKILL)", time.monotonic() - started))
    print(st.times[-1], st.kill, flush=True)
    assert st.ingest.returncode == 0, st.ingest.stderr[-3000:]

    # -- Silver: both hours at once, each gated (results and Data Docs into the bucket)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lake.cli", "silver", "--hour", hour],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hour in (H08, H09)
    ]
    st.silver = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    st.times.append(("silver (2 hours at once)", time.monotonic() - started))
    print(st.times[-1], flush=True)
    assert all(code == 0 for code, _, _ in st.silver), st.silver
    validate = subprocess.Popen(  # the Silver gate on its own, beside the Gold job (it publishes nothing)
        [sys.executable, "-m", "lake.cli", "validate", "silver", "--hour", H08],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    st.gold = _lake(st, "gold", "--date", DAY)
    st.validate = (validate.wait(timeout=300), *validate.communicate())
    assert st.gold.returncode == 0, st.gold.stderr[-3000:]

    # -- the DAGs: one hourly run (hour 09 again) and one daily run, through Airflow
    st.silver_rows = _delta(st, "silver_telemetry").to_pyarrow_dataset().count_rows()
    st.gold_rows = _delta(st, "gold_vehicle_hourly").to_pyarrow_dataset().count_rows()
    homes = {
        dag: fresh_airflow_home(tmp_path_factory) for dag in ("telemetry_bronze_to_silver", "telemetry_silver_to_gold")
    }
    extra = {k: env[k] for k in (*s3_env(s3_endpoint), "KAFKA_BOOTSTRAP_SERVERS", "LAKE_TOPIC")}
    # both at once, as a scheduler may run them (hour 09 again beside the day), each with its Airflow database
    runs = {
        "telemetry_bronze_to_silver": ("2026-03-01T10:00:00Z", None),
        "telemetry_silver_to_gold": ("2026-03-02", {"partial_day": True}),  # not all 24 hours exist
    }
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        futures = {
            dag: pool.submit(dags_test, dag, when, root, home=homes[dag], conf=conf, env=extra, timeout=600)
            for dag, (when, conf) in runs.items()
        }
        for dag, future in futures.items():
            setattr(st, dag, future.result())
    st.times.append(("airflow dags test: hourly and daily at once", time.monotonic() - started))
    yield st
    print("\nthe lake on s3 (moto), wall time per step:")
    for step, seconds in st.times:
        print(f"  {step:<45} {seconds:6.1f} s")
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_the_ingest_lease_is_a_conditional_put_and_names_its_holder(story):
    assert story.lease_seen, "the first ingest never wrote its lease object"
    assert story.second.returncode == 3, story.second.stderr
    assert f"pid {story.first_pid}" in story.second.stderr
    assert story.too_soon.returncode == 3 and f"pid {story.first_pid}" in story.too_soon.stderr


def test_killed_mid_commit_then_restarted_nothing_is_lost_or_doubled(story):
    print(f"kill: {story.kill}")
    assert story.kill["doubled"] == 0 and story.kill["held"] > 0, story.kill
    assert story.kill["half_done_at_restart"] > 0  # the restart had a half-committed group to recover
    assert "took over the ingest lease" in story.ingest.stderr
    held = _offsets_held(story)
    assert set(held.values()) == {1}  # nothing doubled
    # nothing lost: each partition's offsets run from 0 without a gap, and they add up to every message
    # simulate sent (the broker's watermarks, read right after, lag behind: Tansu, not the lake)
    ends = {p: max(o for q, o in held if q == p) + 1 for p in {q for q, _ in held}}
    missing = sorted({(p, o) for p, end in ends.items() for o in range(end)} - set(held))
    assert not missing, f"missing {len(missing)}: {missing[:5]}"
    assert len(held) == story.sent > 10_000 and set(ends) == set(range(PARTITIONS)), (len(held), story.sent, ends)
    assert _half_done(story) == 0  # the killed passes' partial groups were deleted
    # the groups of each partition tile 0..end without a gap or an overlap
    for p, end in ends.items():
        ranges = sorted((first, last) for (q, first, last) in _bronze_groups(story) if q == p)
        assert ranges[0][0] == 0 and ranges[-1][1] == end - 1
        assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:])), ranges


def test_every_closed_hour_has_its_complete_marker_naming_files_that_exist(story):
    markers = {
        i.path.split("/bronze/telemetry/")[1].rsplit("/", 1)[0]: i.path
        for i in _objects(story, "bronze/telemetry")
        if i.base_name == COMPLETE_MARKER
    }
    assert {"year=2026/month=03/day=01/hour=08", "year=2026/month=03/day=01/hour=09"} <= set(markers)
    for hour, path in markers.items():
        with story.fs.open_input_stream(path) as f:
            marker = json.loads(f.read())
        names = {i.base_name for i in _objects(story, f"bronze/telemetry/{hour}")}
        listed = {e["file"] for e in marker["files"] if e.get("table", "bronze_telemetry") == "bronze_telemetry"}
        assert listed and listed <= names, (hour, listed - names)


def test_two_silver_hours_committed_at_once_both_land(story):
    for _, out, _ in story.silver:
        assert "new silver rows" in out
    silver = _delta(story, "silver_telemetry")
    writes = [h for h in silver.history() if h.get("operation") in ("MERGE", "WRITE", "CREATE TABLE")]
    assert len(writes) >= 2, writes
    hours = _query(
        story,
        "SELECT hour(event_ts) AS h, count(*) AS n, count(DISTINCT (vehicle_id, event_id)) AS keys "
        "FROM silver_telemetry WHERE event_date = DATE '2026-03-01' GROUP BY 1 ORDER BY 1",
    )
    assert {r["h"] for r in hours} >= {8, 9}
    assert all(r["n"] == r["keys"] and r["n"] > 1000 for r in hours if r["h"] in (8, 9)), hours


def test_the_gates_keep_their_results_and_data_docs_in_the_bucket(story):
    keys = {i.path.split("/_quality/", 1)[1] for i in _objects(story, "_quality")}
    assert "data_docs/index.html" in keys
    for layer in ("bronze", "silver", "gold"):
        assert any(k.startswith(f"results/{layer}/") and k.endswith(".json") for k in keys), (layer, sorted(keys)[:20])
    code, out, err = story.validate
    assert code == 0, err[-3000:]
    assert out.strip(), "lake validate printed no outcome"


def test_the_issue_query_and_joins_across_layers_answer_on_s3(story):
    silver = _delta(story, "silver_telemetry").to_pyarrow_table(columns=["vehicle_id", "event_date"])
    expected = sum(1 for v in silver["vehicle_id"].to_pylist() if v == "V000001")
    assert expected > 0
    [row] = _query(story, "select count(*) AS n from silver_telemetry where vehicle_id = 'V000001'")
    assert row["n"] == expected
    table = _lake(story, "query", "select count(*) from silver_telemetry where vehicle_id = 'V000001'")
    assert table.returncode == 0 and str(expected) in table.stdout, table.stderr
    joined = _query(
        story,
        "SELECT d.vehicle_type, count(*) AS n, count(DISTINCT b.kafka_offset) > 0 AS traced "
        "FROM silver_telemetry s JOIN bronze_telemetry b "
        "ON b.kafka_partition = s.kafka_partition AND b.kafka_offset = s.kafka_offset "
        "JOIN dims_vehicles d ON d.vehicle_id = s.vehicle_id GROUP BY 1 ORDER BY 1",
    )
    assert sum(r["n"] for r in joined) == silver.num_rows  # every Silver row traced back to its Bronze record
    [gold] = _query(story, "SELECT sum(event_count) AS n FROM gold_vehicle_hourly WHERE event_date = DATE '2026-03-01'")
    [day] = _query(story, "SELECT count(*) AS n FROM silver_telemetry WHERE event_date = DATE '2026-03-01'")
    assert gold["n"] == day["n"] > 0  # Gold reconciles with Silver
    csv = _query(story, "SELECT vehicle_id, vehicle_type FROM gold_vehicle_state ORDER BY 1", fmt="csv")
    assert csv.splitlines()[0].replace('"', "") == "vehicle_id,vehicle_type" and len(csv.splitlines()) == VEHICLES + 1


def test_one_hourly_and_one_daily_dag_run_on_s3(story):
    for dag in ("telemetry_bronze_to_silver", "telemetry_silver_to_gold"):
        run = getattr(story, dag)
        assert run.state == "success", run.output[-5000:]
    # re-running an hour and a day changes nothing
    assert _delta(story, "silver_telemetry").to_pyarrow_dataset().count_rows() == story.silver_rows
    assert _delta(story, "gold_vehicle_hourly").to_pyarrow_dataset().count_rows() == story.gold_rows


@pytest.fixture(scope="module")
def maintained(story):
    before = _query(story, "SELECT count(*) AS n, count(DISTINCT vehicle_id) AS v FROM silver_telemetry")
    files_before = len(_delta(story, "silver_telemetry").file_uris())
    dry = _lake(story, "maintain", "--dry-run")
    done = _lake(story, "maintain", "--vacuum-hours", "0", "--force")
    return SimpleNamespace(before=before, files_before=files_before, dry=dry, done=done)


def test_maintain_compacts_and_vacuums_on_s3_changing_no_answer(story, maintained):
    assert maintained.dry.returncode == 0, maintained.dry.stderr
    assert maintained.done.returncode == 0, maintained.done.stderr
    assert _query(story, "SELECT count(*) AS n, count(DISTINCT vehicle_id) AS v FROM silver_telemetry") == (
        maintained.before
    )
    assert len(_delta(story, "silver_telemetry").file_uris()) < maintained.files_before
    assert any(i.base_name == "maintenance.jsonl" for i in _objects(story, "_audit"))


def test_forget_erases_a_vehicle_from_every_table_on_s3(story, maintained):
    tables = [
        "bronze_telemetry",
        "silver_telemetry",
        "gold_vehicle_hourly",
        "gold_vehicle_state",
        "dims_vehicles",
    ]
    counts = {
        t: _query(story, f"SELECT count(*) AS n FROM {t} WHERE vehicle_id = '{FORGOTTEN}'")[0]["n"] for t in tables
    }
    assert all(n > 0 for n in counts.values()), counts
    done = _lake(story, "forget", "--vehicle", FORGOTTEN, "--reason", "test", "--requested-by", "tests")
    assert done.returncode == 0, done.stderr
    for t in tables:
        assert _query(story, f"SELECT count(*) AS n FROM {t} WHERE vehicle_id = '{FORGOTTEN}'")[0]["n"] == 0, t
    [others] = _query(story, f"SELECT count(*) AS n FROM silver_telemetry WHERE vehicle_id <> '{FORGOTTEN}'")
    assert others["n"] > 0
    assert any(i.base_name == "forget.jsonl" for i in _objects(story, "_audit"))
