"""A simulated fleet's own secrets: what each vehicle's modem would keep in its secure element.

A real device holds one secret, given to it at provisioning (``lake devices
add``). A simulator plays thousands of devices, so it keeps their secrets in
one file (mode 0600): ``{"V000001": "lk1.V000001.…", …}``. Never commit it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Union

from edge_client.errors import EdgeConfigError


def load_keys(path: Union[str, os.PathLike]) -> dict[str, str]:
    p = Path(path)
    if not p.exists():
        return {}
    try:
        keys = json.loads(p.read_text())
    except ValueError as exc:
        raise EdgeConfigError(f"{p} is not a device keys file ({exc})") from None
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise EdgeConfigError(f"{p} is not a device keys file (want a JSON object vehicle_id -> secret)")
    return keys


def save_keys(path: Union[str, os.PathLike], keys: Mapping[str, str]) -> None:
    """Written whole (temporary file, fsync, rename), readable only by its owner."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dict(sorted(keys.items())), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def secret_for(keys: Mapping[str, str], vehicle_id: str) -> str:
    try:
        return keys[vehicle_id]
    except KeyError:
        raise EdgeConfigError(
            f"no secret for vehicle {vehicle_id!r}: give it one with `lake devices add {vehicle_id}`"
        ) from None
