"""The local Airflow's health, as its api-server reports it."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Optional

__all__ = ["health", "health_body", "statuses", "is_healthy", "heartbeat_since", "last_error"]

# The health endpoint's name for each component that heartbeats.
_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


def health_body(url: str, timeout: float = 5.0) -> Optional[dict]:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=timeout) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def statuses(body: Optional[dict]) -> Optional[dict]:
    if body is None:
        return None
    return {name: (part or {}).get("status") or "absent" for name, part in body.items()}


def health(url: str, timeout: float = 5.0) -> Optional[dict]:
    """``/api/v2/monitor/health`` as {component: status}; None when the api-server does not answer."""
    return statuses(health_body(url, timeout))


def is_healthy(report: Optional[dict]) -> bool:
    wanted = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return report is not None and all(report.get(name) == "healthy" for name in wanted)


def heartbeat_since(body: dict, component: str, since: float) -> bool:
    """Has ``component`` heartbeaten since ``since`` (epoch s)?  The health of a component just
    (re)started must not be the last heartbeat of the one it replaces, still within the threshold."""
    key = _HEALTH_KEYS[component]
    beat = (body.get(key) or {}).get(f"latest_{key}_heartbeat")
    if not beat:
        return False
    try:
        return datetime.fromisoformat(beat).timestamp() >= since
    except ValueError:
        return False


def last_error(path: Path) -> str:
    """The log's last exception line (``SomeError: why``), else its last line: one line for an error message."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line):
            return line
    return lines[-1] if lines else "empty log"
