"""The compose stack's Prometheus and Grafana files (Grafana cannot run here, so they are checked by
parsing): promtool accepts the configuration and its rules, every scrape job the rules name exists, and
every series the provisioned dashboard and the rules query is one the lake exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "docker" / "prometheus"
GRAFANA_DIR = REPO / "docker" / "grafana"
SOURCES = [*REPO.glob("lake/**/*.py"), *REPO.glob("beam_pipelines/**/*.py")]


def exported_series() -> set[str]:
    """Every series name the code defines (counters get _total, histograms _bucket/_sum/_count)."""
    names: set[str] = set()
    for path in SOURCES:
        text = path.read_text()
        for name in re.findall(r"[\"'](lake_[a-z0-9_]+)[\"']", text):
            names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def queried_series(expr: str) -> set[str]:
    return set(re.findall(r"\b(lake_[a-z0-9_]+)", expr))


def test_promtool_accepts_the_configuration_and_its_rules(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs Debian's prometheus package (promtool)")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    key = tmp_path / "api_key"
    key.write_text("k")
    for job in config["scrape_configs"]:  # the key file is written at start in the container
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key)
    shutil.copy(PROMETHEUS_DIR / "lake_rules.yml", tmp_path / "lake_rules.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout


def test_every_job_the_rules_name_is_scraped():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    rules = (PROMETHEUS_DIR / "lake_rules.yml").read_text()
    named = set(re.findall(r'job="([a-z]+)"', rules)) | {
        j for group in re.findall(r'job=~"([a-z|]+)"', rules) for j in group.split("|")
    }
    assert named <= jobs


def test_rules_and_dashboard_query_only_series_the_lake_exports():
    exported = exported_series()
    rules = yaml.safe_load((PROMETHEUS_DIR / "lake_rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert queried_series(rule["expr"]) <= exported, rule["alert"]
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "lake.json").read_text())
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert queried_series(target["expr"]) and queried_series(target["expr"]) <= exported, panel["title"]
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "lake.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
