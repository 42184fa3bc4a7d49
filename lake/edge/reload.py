"""What happens after ``lake devices add|revoke``: every edge sees the change within 10 s.

The HTTP gateway re-reads the credentials file by itself (``Authenticator``,
every 2 s). Mosquitto cannot read our store: the project's Mosquitto, if it
runs, gets its password and ACL files regenerated and a SIGHUP.
"""

from __future__ import annotations

from lake.edge.mosquitto import reload_if_running
from lake_core.settings import Settings


def after_credentials_change(settings: Settings) -> None:
    reload_if_running(settings)
