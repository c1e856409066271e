"""Free loopback ports for the processes the demo, the chaos run and the tests start.

Binding port 0 asks the kernel for a free port, but once that socket is closed the
kernel may hand the same port to the next request: a run that asks for several ports
before binding any (a broker's listeners, Toxiproxy's proxies) could get one twice.
:func:`free_port` never returns a port it has returned before in this process.
"""

from __future__ import annotations

import socket
import threading

__all__ = ["LOOPBACK", "free_port"]

LOOPBACK = "127.0.0.1"
#: Attempts before giving up (a loopback with this many ports taken is out of ports).
MAX_ATTEMPTS = 1000

_given: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port free right now and not handed out before by this process."""
    with _lock:
        for _ in range(MAX_ATTEMPTS):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOOPBACK, 0))
                port = int(s.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
    raise OSError(f"no new free loopback port after {MAX_ATTEMPTS} attempts")
