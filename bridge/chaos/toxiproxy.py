"""A small client of Shopify Toxiproxy's REST API, and its server as a child process.

Toxiproxy (``toxiproxy-server -host 127.0.0.1 -port P``) forwards TCP from a
listen address to an upstream and applies "toxics" to a proxy's streams:
``latency`` (``latency`` ms), ``timeout`` (``timeout`` 0: no data passes and
the connection stays open until the toxic is removed: a blackhole) and
``reset_peer`` (connections are reset with RST after ``timeout`` ms).
Endpoints used: ``POST /proxies``, ``POST /proxies/{name}/toxics``,
``DELETE /proxies/{name}/toxics/{toxic}``, ``GET /proxies/{name}/toxics``,
``GET /version``.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = ["STREAMS", "ToxiproxyServer"]

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 10.0
#: How long a toxic's removal is asked again (a client holding it closes well before).
REMOVE_DEADLINE_S = 60.0
REMOVE_RETRY_S = 1.0
#: Both directions of a link: client → upstream and upstream → client.
STREAMS = ("upstream", "downstream")


class ToxiproxyServer:
    """``toxiproxy-server`` on loopback, managed through its REST API."""

    def __init__(
        self, binary: Path, port: int, log: IO[bytes], transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.binary = binary
        self.port = port
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT_S, transport=transport
        )

    def start(self) -> None:
        """Start the server and wait until its API answers (RuntimeError otherwise)."""
        self._proc = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"toxiproxy exited with {self._proc.returncode}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/version", timeout=1.0).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("toxiproxy did not answer")

    async def proxy(self, name: str, listen_port: int, upstream: str) -> None:
        """Create proxy ``name`` from 127.0.0.1:listen_port to ``upstream`` (host:port)."""
        body = {"name": name, "listen": f"127.0.0.1:{listen_port}", "upstream": upstream, "enabled": True}
        (await self.http.post("/proxies", json=body)).raise_for_status()

    async def add_toxic(
        self, proxy: str, name: str, kind: str, stream: str, attributes: dict[str, Any]
    ) -> None:
        """Add toxic ``name`` of type ``kind`` on one stream of ``proxy``."""
        body = {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes}
        (await self.http.post(f"/proxies/{proxy}/toxics", json=body)).raise_for_status()

    async def remove_toxic(self, proxy: str, name: str, deadline_s: float = REMOVE_DEADLINE_S) -> None:
        """Remove toxic ``name`` (a toxic already gone is fine), however long Toxiproxy takes.

        Toxiproxy removes a toxic link by link, first flushing what each link
        holds to its client. A client that has stopped reading (librdkafka
        waiting out a request timeout on a slow connection) holds the removal,
        and every API call on that proxy, until it reads or closes; the DELETE
        times out meanwhile with the removal still under way. So the removal is
        asked again and checked for ``deadline_s`` (RuntimeError then: a
        harness error, not a bridge failure).
        """
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                response = await self.http.delete(f"/proxies/{proxy}/toxics/{name}")
                if response.status_code == httpx.codes.NOT_FOUND or response.is_success:
                    return
                if not await self._has_toxic(proxy, name):
                    return
            except httpx.TimeoutException:
                pass
            await asyncio.sleep(REMOVE_RETRY_S)
        raise RuntimeError(f"toxic {name} of proxy {proxy} still there after {deadline_s:g} s")

    async def _has_toxic(self, proxy: str, name: str) -> bool:
        response = await self.http.get(f"/proxies/{proxy}/toxics")
        response.raise_for_status()
        return any(t.get("name") == name for t in response.json())

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
