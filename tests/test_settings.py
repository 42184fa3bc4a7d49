"""Every environment variable is listed once (``lake_core.settings.ENVIRONMENT``), and the README says the same."""

from __future__ import annotations

import pathlib
import re

import pytest

from lake_core.settings import ENVIRONMENT, env

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("lake", "lake_core", "lake_schemas", "beam_pipelines", "quality", "edge_client", "dags")
#: Read by other programs (Airflow, the cloud SDKs), not by the lake.
NOT_OURS = ("AIRFLOW__", "AWS_", "GOOGLE_")


def _readme_variables() -> set[str]:
    text = (REPO / "README.md").read_text()
    table = text[text.index("| variable / flag | default | meaning |") :].split("\n\n", 1)[0]
    names = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return {n for n in names if not n.startswith(NOT_OURS)}


def test_the_readme_table_lists_every_variable_and_no_other():
    assert _readme_variables() == {v.name for v in ENVIRONMENT}


def test_the_code_reads_no_variable_that_is_not_listed():
    known = {v.name for v in ENVIRONMENT}
    used = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            used |= set(re.findall(r"[\"']((?:LAKE|KAFKA|MQTT)_[A-Z0-9_]+)[\"']", path.read_text()))
    assert used - known == set(), "read through lake_core.settings.env and list them in ENVIRONMENT"


def test_env_refuses_an_unlisted_name(monkeypatch):
    monkeypatch.setenv("LAKE_TOPIC", "  t1 ")
    assert env("LAKE_TOPIC") == "t1"
    monkeypatch.setenv("LAKE_TOPIC", "")
    assert env("LAKE_TOPIC") is None
    with pytest.raises(KeyError, match="LAKE_TYPO is not in lake_core.settings.ENVIRONMENT"):
        env("LAKE_TYPO")
