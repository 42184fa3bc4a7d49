"""Settings read once, at the edge, from flags and the environment.

Every command takes ``--lake-root`` (env ``LAKE_ROOT``, default
``./lake_data``) and ``--bootstrap`` (env ``KAFKA_BOOTSTRAP_SERVERS``,
default: the embedded broker's address if it runs, else ``127.0.0.1:9092``).

``ENVIRONMENT`` lists every environment variable the lake reads, with its
default and meaning; code reads them through ``env(name)``, which refuses a
name not listed, and a test checks the README's configuration table against
the list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from lake_core.errors import ConfigError
from lake_core.processes import running_broker_address
from lake_schemas import DLQ_TOPIC, TELEMETRY_TOPIC, LakePaths

DEFAULT_LAKE_ROOT = "./lake_data"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str  # as the README shows it
    meaning: str
    flag: Optional[str] = None  # the command-line flag that overrides it


#: Every environment variable the lake reads (Airflow's own ``AIRFLOW__*`` and the clouds' ``AWS_*``/``GOOGLE_*``
#: are read by those libraries, not by us).
ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar("LAKE_ROOT", "./lake_data", "where the lake lives: a path or file://, s3://, gs:// URI", "--lake-root"),
    EnvVar("KAFKA_BOOTSTRAP_SERVERS", "embedded broker", "Kafka to read and write", "--bootstrap"),
    EnvVar("LAKE_TOPIC", "vehicle-telemetry", "the telemetry topic", "--topic"),
    EnvVar("LAKE_DLQ_TOPIC", "<topic>-dlq (vehicle-telemetry-dlq)", "where refused messages go, byte for byte"),
    EnvVar("MQTT_HOST", "127.0.0.1", "`lake simulate --sink mqtt`: the MQTT broker"),
    EnvVar("MQTT_PORT", "1884", "`lake simulate --sink mqtt`: its port (the project's Mosquitto, `lake mqtt start`)"),
    EnvVar("MQTT_CA_FILE", "(unset)", "`lake simulate --sink mqtt`: verify the broker's TLS certificate with this CA"),
    EnvVar(
        "LAKE_MQTT_BRIDGE_SECRET",
        "(generated into the Mosquitto state folder)",
        "`lake mqtt` and `lake bridge mqtt`: the bridge's MQTT password, when they run apart (compose)",
    ),
    EnvVar("LAKE_GATEWAY_URL", "http://127.0.0.1:8000", "`lake simulate --sink http`: the HTTP gateway"),
    EnvVar(
        "LAKE_DEVICE_KEYS",
        "<lake root>/_local/fleet_keys.json",
        "`lake simulate --sink mqtt|http`: the simulated devices' secrets (mode 0600)",
        "--device-keys",
    ),
    EnvVar(
        "LAKE_SPOOL",
        "<lake root>/_local/spool/<sink>.spool (mqtt, http); none (kafka)",
        "`lake simulate`: the durable store-and-forward spool; `none` sends directly",
        "--spool",
    ),
    EnvVar(
        "LAKE_VALIDATE_PROCESSES",
        "one per core, at most 4",
        "`lake ingest` on the local runner: helper processes that validate batches",
        "--validate-processes",
    ),
    EnvVar("LAKE_GATE_PROCESS", "1", "0: run the quality gates in the job's own process, not a second one"),
    EnvVar(
        "LAKE_MERGE_MEMORY_MB",
        "1024",
        "the Silver job: memory its MERGE may hold before spilling to disk (0: no bound; a MERGE that needs "
        "more for the rows it joins runs again unbounded, with a warning)",
    ),
    EnvVar("LAKE_AIRFLOW_PORT", "8080", "`lake airflow up`: where the UI listens", "--port"),
    EnvVar("LAKE_AIRFLOW_HOST", "127.0.0.1", "`lake airflow up`: the UI's interface", "--host"),
    EnvVar("LAKE_DAGS_START_DATE", "2026-03-01", "the DAGs' start date (their first data interval)"),
    EnvVar("LAKE_BEAM_RUNNER", "FnApiRunner", "the DAGs: Beam runner of the Silver and Gold jobs (or Variable)"),
    EnvVar("LAKE_BEAM_OPTIONS", "{}", "the DAGs: JSON object of Beam options for the jobs (or Variable)"),
    EnvVar("LAKE_SILVER_MAX_QUARANTINE_RATE", "0.1", "the DAGs: the Silver gate's quarantine limit (or Variable)"),
    EnvVar("LAKE_BRONZE_RETENTION_DAYS", "90", "the maintenance DAG: Bronze retention (or Variable)"),
    EnvVar("LAKE_SILVER_RETENTION_DAYS", "730", "the maintenance DAG: Silver retention (or Variable)"),
    EnvVar("LAKE_GOLD_RETENTION_DAYS", "1825", "the maintenance DAG: Gold retention (or Variable)"),
    EnvVar("LAKE_VACUUM_RETENTION_HOURS", "168", "the maintenance DAG: vacuum retention (or Variable)"),
    EnvVar(
        "LAKE_HOT_DSN",
        "postgresql://postgres@127.0.0.1:5432/lake_hot",
        "the hot store (PostgreSQL, contract section 9)",
        "--hot-dsn",
    ),
    EnvVar(
        "LAKE_GEOFENCE",
        "the simulator's city (20 km around Berlin's centre)",
        "`lake stream`: GeoJSON file of the operating areas (the geofence alert rule)",
        "--geofence",
    ),
    EnvVar("LAKE_ALERT_WEBHOOK", "(unset)", "`lake stream`: POST every alert event to this URL too", "--webhook"),
    EnvVar("LAKE_API_KEYS", "(unset)", "`lake serve`: comma-separated API keys; needed by clients outside loopback"),
    EnvVar(
        "LAKE_PUSHGATEWAY_URL",
        "(unset)",
        "batch jobs (silver, gold, maintain, validate) push their metrics to this Prometheus Pushgateway",
    ),
    EnvVar("LAKE_TEST_BOOTSTRAP", "(unset)", "the test suite: run against this real Kafka instead of the embedded one"),
)
_KNOWN = {v.name: v for v in ENVIRONMENT}


def env(name: str) -> Optional[str]:
    """The environment variable ``name`` (one of ``ENVIRONMENT``), None when unset or empty."""
    if name not in _KNOWN:
        raise KeyError(f"{name} is not in lake_core.settings.ENVIRONMENT: list it there (and in the README)")
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    lake_root: str  # a local absolute path or a URI (s3://, gs://)
    bootstrap: str
    topic: str = TELEMETRY_TOPIC
    dlq_topic: str = DLQ_TOPIC

    @property
    def paths(self) -> LakePaths:
        return LakePaths(self.lake_root)

    @property
    def is_local(self) -> bool:
        return "://" not in self.lake_root

    @classmethod
    def resolve(
        cls, lake_root: Optional[str] = None, bootstrap: Optional[str] = None, topic: Optional[str] = None
    ) -> "Settings":
        root = lake_root or env("LAKE_ROOT") or DEFAULT_LAKE_ROOT
        root = normalize_root(root)
        boot = bootstrap or env("KAFKA_BOOTSTRAP_SERVERS")
        if not boot:
            boot = running_broker_address(root) or DEFAULT_BOOTSTRAP
        topic = topic or env("LAKE_TOPIC") or TELEMETRY_TOPIC
        dlq = env("LAKE_DLQ_TOPIC") or (DLQ_TOPIC if topic == TELEMETRY_TOPIC else f"{topic}-dlq")
        return cls(lake_root=root, bootstrap=boot, topic=topic, dlq_topic=dlq)


def normalize_root(root: str) -> str:
    """A path or ``file://`` URI becomes an absolute local path; other URIs stay."""
    if root.startswith("file://"):
        root = root[len("file://") :]
    elif "://" in root:
        scheme = root.split("://", 1)[0]
        if scheme not in ("s3", "gs", "gcs", "abfs", "az"):
            raise ConfigError(f"unsupported lake root {root!r}: use a path, file://, s3:// or gs://")
        return root.rstrip("/")
    return os.path.abspath(os.path.expanduser(root))
