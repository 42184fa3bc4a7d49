"""The device side's errors, shaped like the lake's (``lake_core.errors``).

``edge_client`` runs on vehicles and gateways without the lake installed,
so it cannot share the lake's classes; the ``lake`` CLI catches both and
prints either as one line with its ``exit_code``.
"""

from __future__ import annotations

__all__ = ["EdgeError", "EdgeConfigError", "UplinkUnavailableError", "DeliveryError"]


class EdgeError(Exception):
    exit_code = 1


class EdgeConfigError(EdgeError):
    """A bad simulation or sender setting."""

    exit_code = 2


class UplinkUnavailableError(EdgeError):
    """No broker (Kafka or MQTT) answers, or it refused the connection."""

    exit_code = 3


class DeliveryError(EdgeError):
    """Messages were refused or not confirmed by the uplink."""

    exit_code = 1
