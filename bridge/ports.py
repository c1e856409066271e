"""Free loopback ports for the processes the demo, the chaos run and the tests start.

Binding port 0 asks the kernel for a free port, but once that probe socket is closed the
kernel may give the same port to the next probe (it did for 298 of 3,000 probes here), to a
process binding port 0 itself (the simulator), or to an outgoing connection's source port.
A run that picks several ports before binding any (a broker's listeners, Toxiproxy's
proxies) could then get one twice. So :func:`free_port` draws from the ports below the
kernel's ephemeral range, which the kernel never hands out by itself, checks that each
binds, and never returns a port it has returned before in this process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

__all__ = ["LOOPBACK", "free_port"]

LOOPBACK = "127.0.0.1"
#: Where ports are drawn from: above this, below the kernel's ephemeral range.
LOWEST = 10000
#: The kernel's ephemeral range (where port 0 and outgoing connections take ports from).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32768
#: Draws before giving up (a loopback with this many ports taken is out of ports).
MAX_ATTEMPTS = 1000

_given: set[int] = set()
_lock = threading.Lock()
_random = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def _binds(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def free_port() -> int:
    """A loopback TCP port that binds right now, is outside the kernel's ephemeral range
    (when there is room below it) and was not handed out before by this process."""
    high = _ephemeral_low() - 1
    with _lock:
        for _ in range(MAX_ATTEMPTS):
            port = _random.randint(LOWEST, high) if high > LOWEST else _kernel_port()
            if port not in _given and _binds(port):
                _given.add(port)
                return port
    raise OSError(f"no new free loopback port after {MAX_ATTEMPTS} attempts")
