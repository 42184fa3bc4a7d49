"""``lake demo`` in a second clone: the first one's broker holds port 9092, the demo takes another."""

from __future__ import annotations

import socket

from lake.commands.demo import broker_port
from lake_core.processes import free_port


def test_a_taken_port_is_replaced_by_a_free_one_and_said(capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        port = broker_port(taken)
        assert port != taken
        assert f"port {taken} is taken" in capsys.readouterr().out
    free = free_port()
    assert broker_port(free) == free and capsys.readouterr().out == ""
