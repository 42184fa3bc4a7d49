"""A gated job's gate runs in a second process started with the job: the job's own process
never imports Great Expectations, and the gate's verdict is the same as in-process."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import sys
import pyarrow as pa
from lake_schemas.tables import BRONZE_SCHEMA
from quality.gates import BronzeGate
from quality.worker import gate_process
from lake_core.errors import QualityGateFailed

root = sys.argv[1]
T0 = 1772352000000  # 2026-03-01T08:00:00Z


def _bronze_rows(n):
    ts = [T0 + i * 1000 for i in range(n)]
    columns = {"kafka_topic": ["vehicle-telemetry"] * n, "kafka_partition": [0] * n, "kafka_offset": list(range(n)),
               "ingest_ts": ts, "key": [f"V{i % 3}" for i in range(n)], "payload": ['{"x": 1}'] * n,
               "vehicle_id": [f"V{i % 3}" for i in range(n)], "event_ts": ts}
    return pa.Table.from_arrays([pa.array(columns[f.name]).cast(f.type) for f in BRONZE_SCHEMA], schema=BRONZE_SCHEMA)

with gate_process(True):
    ok = BronzeGate(root)(_bronze_rows(20), "2026-03-01T08")
    bad = _bronze_rows(20)
    bad = bad.set_column(bad.schema.get_field_index("vehicle_id"), "vehicle_id", pa.array(["not a vehicle id!"] * 20))
    try:
        BronzeGate(root)(bad, "2026-03-01T09")
        failed = None
    except QualityGateFailed as exc:
        failed = str(exc)
print("ok", ok.success, "docs", bool(ok.docs))
print("failed", failed)
print("gx imported here", "great_expectations" in sys.modules)
"""


@pytest.mark.slow
def test_the_gate_runs_in_its_own_process_with_the_same_verdicts(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "lake")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "ok True docs True" in out, out
    assert "failed bronze hour 2026-03-01T09 failed its quality gate" in out, out
    assert "gx imported here False" in out, out
