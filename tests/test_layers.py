"""The layer contract (``tests/support/layers.py``) holds, and fails when a forbidden import is added."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

from support.layers import ALLOWED, heavy_imports, layer_violations, local_import_violations

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_packages_keep_their_layers():
    assert layer_violations(REPO) == []


@pytest.mark.slow
def test_function_local_imports_keep_something_heavy_off_a_path():
    assert local_import_violations(REPO) == []


@pytest.fixture
def tree(tmp_path):
    """A copy of the packages' sources, to break on purpose."""
    for package in ALLOWED:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize(
    "file, line, expected",
    [
        ("lake_core/errors.py", "from lake.cli import main", "lake_core may not import lake.cli"),
        ("lake_schemas/paths.py", "import lake_core.storage", "lake_schemas may not import lake_core.storage"),
        ("quality/gates.py", "from beam_pipelines.batch import run_pipeline", "quality may not import beam_pipelines"),
        ("edge_client/fleet.py", "from lake_core import errors", "edge_client may not import lake_core"),
        ("beam_pipelines/batch.py", "from dags import telemetry_maintenance", "beam_pipelines may not import dags"),
        ("lake/query.py", "from lake.commands import query", "only the CLI imports lake.commands"),
    ],
)
def test_a_forbidden_import_is_named(tree, file, line, expected):
    path = tree / file
    path.write_text(path.read_text() + f"\n\n{line}\n")
    problems = layer_violations(tree)
    assert problems and all(p.startswith(f"{file}:") for p in problems), problems
    assert any(expected in p for p in problems), problems


def test_a_forbidden_import_hidden_in_a_function_is_named(tree):
    path = tree / "lake_core" / "settings.py"
    path.write_text(path.read_text() + "\n\ndef _hidden():\n    from lake.local.broker import start_broker\n")
    [problem] = layer_violations(tree)
    assert "lake_core may not import lake.local.broker" in problem


@pytest.mark.slow
def test_a_needless_local_import_is_named(tree):
    path = tree / "lake_core" / "registry.py"
    path.write_text(path.read_text() + "\n\ndef _lazy():\n    from lake_schemas.paths import HOUR_MS\n")
    [problem] = local_import_violations(tree)
    assert problem.startswith("lake_core/registry.py:") and "lake_schemas.paths" in problem


def test_the_heavy_analysis_follows_our_modules():
    assert "apache_beam" in heavy_imports(REPO, "beam_pipelines.silver.pipeline")
    assert heavy_imports(REPO, "lake.cli") == frozenset(), "`lake --help` must not import a heavy library"


def test_edge_client_imports_without_the_lake():
    """What runs on a vehicle: edge_client with the lake's other packages and Beam/deltalake unimportable."""
    code = """
import sys
class Block:
    BLOCKED = ("lake", "lake_core", "beam_pipelines", "quality", "dags", "apache_beam", "deltalake",
               "great_expectations", "duckdb", "airflow", "pandas")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"blocked on a device: {name}")
sys.meta_path.insert(0, Block())
import pkgutil, importlib, edge_client
for info in pkgutil.walk_packages(edge_client.__path__, "edge_client."):
    importlib.import_module(info.name)
from edge_client.config import SimulationConfig
from edge_client.senders import CollectingSender
from edge_client.simulate import simulate
sender = CollectingSender()
simulate(SimulationConfig(vehicles=3, duration_s=5), sender, progress=False)
print(len(sender.values))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 0
