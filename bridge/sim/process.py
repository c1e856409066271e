"""Run the simulator as a child process (``python -m bridge.sim``) and wait for its ready line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

__all__ = ["READY_TIMEOUT_S", "SimProcess"]

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_READY = re.compile(r"simulator listening on (http://\S+)")


class SimProcess:
    """``with SimProcess(["--agents", "20000", "--seed", "1"]) as sim: sim.base_url``.

    Binds a free port unless ``--port`` is among ``args``; stops with SIGTERM.
    """

    def __init__(self, args: Sequence[str] = (), *, python: str = sys.executable) -> None:
        argv = list(args)
        if "--port" not in argv:
            argv += ["--port", "0"]
        self.argv = [python, "-m", "bridge.sim", *argv]
        self.base_url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the process and return its base URL once it listens."""
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)  # noqa: S603 - our own argv
        found: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                match = _READY.search(line)
                if match:
                    found.append(match.group(1))
                    break

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(READY_TIMEOUT_S)
        if not found:
            self.stop()
            raise RuntimeError(f"simulator did not become ready: {' '.join(self.argv)}")
        self.base_url = found[0]
        return self.base_url

    def stop(self) -> int | None:
        """SIGTERM, wait, and return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> SimProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
