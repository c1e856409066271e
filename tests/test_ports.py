"""``bridge.ports.free_port`` (and the broker script, which uses it) never hands out a port twice."""

from __future__ import annotations

import socket

from bridge import ports
from bridge.ports import free_port
from tests.conftest import localkafka

#: Enough probes that the kernel, asked for port 0, hands some port out twice (298 of 3,000
#: here): a broker whose listeners were chosen that way once refused to start with two
#: listeners on one port.
PROBES = 3000


def test_free_port_never_repeats_and_binds() -> None:
    given = [free_port() for _ in range(PROBES)]
    assert len(set(given)) == len(given)
    with socket.socket() as s:
        s.bind(("127.0.0.1", given[-1]))


def test_free_ports_are_below_the_kernels_ephemeral_range() -> None:
    """The kernel never gives these to port 0 or to an outgoing connection meanwhile."""
    low = ports._ephemeral_low()
    assert all(ports.LOWEST <= free_port() < low for _ in range(100))


def test_the_broker_script_shares_the_bridges_ports() -> None:
    """One process, one set: a broker listener never gets a port a worker's metrics got."""
    assert localkafka.free_port is free_port
