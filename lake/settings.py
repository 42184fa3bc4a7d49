"""Settings read once, at the edge, from flags and the environment.

Every command takes ``--lake-root`` (env ``LAKE_ROOT``, default
``./lake_data``) and ``--bootstrap`` (env ``KAFKA_BOOTSTRAP_SERVERS``,
default: the embedded broker's address if it runs, else ``127.0.0.1:9092``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from lake_schemas import DLQ_TOPIC, TELEMETRY_TOPIC, LakePaths

from .errors import ConfigError

DEFAULT_LAKE_ROOT = "./lake_data"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


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
    def resolve(cls, lake_root: Optional[str] = None, bootstrap: Optional[str] = None,
                topic: Optional[str] = None) -> "Settings":
        root = lake_root or os.environ.get("LAKE_ROOT") or DEFAULT_LAKE_ROOT
        root = normalize_root(root)
        boot = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not boot:
            from .broker import running_broker_address  # local import: avoids a cycle

            boot = running_broker_address(root) or DEFAULT_BOOTSTRAP
        topic = topic or os.environ.get("LAKE_TOPIC") or TELEMETRY_TOPIC
        dlq = os.environ.get("LAKE_DLQ_TOPIC") or (DLQ_TOPIC if topic == TELEMETRY_TOPIC else f"{topic}-dlq")
        return cls(lake_root=root, bootstrap=boot, topic=topic, dlq_topic=dlq)


def normalize_root(root: str) -> str:
    """A path or ``file://`` URI becomes an absolute local path; other URIs stay."""
    if root.startswith("file://"):
        root = root[len("file://"):]
    elif "://" in root:
        scheme = root.split("://", 1)[0]
        if scheme not in ("s3", "gs", "gcs", "abfs", "az"):
            raise ConfigError(f"unsupported lake root {root!r}: use a path, file://, s3:// or gs://")
        return root.rstrip("/")
    return os.path.abspath(os.path.expanduser(root))
