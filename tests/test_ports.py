"""``bridge.ports.free_port`` and the broker script's copy never hand out a port twice."""

from __future__ import annotations

import socket

from bridge.ports import free_port
from tests.conftest import localkafka

#: Enough probes that the kernel, left to itself, hands some port out twice: a broker whose
#: listeners were chosen this way once refused to start with two listeners on one port.
PROBES = 3000


def test_free_port_never_repeats_and_is_bindable() -> None:
    ports = [free_port() for _ in range(PROBES)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_the_broker_scripts_free_port_never_repeats() -> None:
    ports = [localkafka.free_port() for _ in range(PROBES)]
    assert len(set(ports)) == len(ports)
