"""The metrics port: ``/metrics``, ``/healthz`` and ``/readyz`` (README "Operations").

- ``/healthz``: the process and its event loop are alive (the handler runs)
  and the optional liveness callback agrees (for a worker: no owned shard
  has been unable to restart for 60 s); 503 with the reasons otherwise, so
  Kubernetes replaces the pod.
- ``/readyz``: every owned shard is connected and subscribed and every
  producer is healthy; 503 with the reasons otherwise. The answers come from
  callbacks so this module knows nothing about shards.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.errors import ConfigError
from bridge.metrics import REGISTRY

__all__ = ["HealthServer", "Readiness"]

#: ``(ready, details)``: details are small JSON-able facts per shard.
Readiness = Callable[[], tuple[bool, dict[str, object]]]


class HealthServer:
    """aiohttp server for the metrics port."""

    def __init__(self, host: str, port: int, readiness: Readiness, liveness: Readiness | None = None) -> None:
        self._host = host
        self._port = port
        self._readiness = readiness
        self._liveness = liveness
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(
                f"cannot serve metrics on {self._host}:{self._port} ({exc.strerror}); "
                "set BRIDGE_METRICS_PORT to a free port"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        if self._liveness is None:
            return web.Response(text="ok\n")
        alive, details = self._liveness()
        if alive:
            return web.Response(text="ok\n")
        return web.Response(
            status=503, body=orjson.dumps({"alive": False, **details}), content_type="application/json"
        )

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, details = self._readiness()
        return web.Response(
            status=200 if ready else 503,
            body=orjson.dumps({"ready": ready, **details}),
            content_type="application/json",
        )
