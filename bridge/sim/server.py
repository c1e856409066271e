"""The Genesys Cloud simulator's server: REST, WebSocket and admin API on one port.

Start it in-process with :func:`run_simulator` (``port=0`` picks a free port)::

    async with run_simulator(SimConfig(port=0, agents=100, seed=7)) as sim:
        sim.base_url   # http://127.0.0.1:PORT  (login and API)
        sim.simulator  # the live Simulator object (org, registry, generator)

or as a process with ``presence-bridge sim`` / :class:`bridge.sim.process.SimProcess`.

Choices where Genesys's behaviour is undocumented (the strictest plausible one):

- Tokens: only HTTP Basic client authentication is accepted at
  ``/oauth/token``; a form without ``grant_type=client_credentials`` is 400.
  Revoking tokens leaves existing channels and sockets open unless
  ``revoke_ends_channels`` (``--revoke-ends-channels``, or ``endChannels`` in
  the fault) says otherwise: then each channel created with a revoked token
  gets a ``token_revoked`` system message and ends (close code 1000).
- Rate limit: a fixed window per token (``rate_limit_window_s``, 60 s) starting
  at its first request; refused requests do not count; ``Retry-After`` is the
  whole seconds left (≥ 1). Only ``/api/v2`` calls count, and every one does.
- ``GET /api/v2/users``: ``state`` defaults to ``active``; accepted values are
  ``active``, ``inactive``, ``deleted``, ``any`` (other → 400). A removed user
  (``DELETE /sim/users/{id}``) becomes ``state=deleted``: it leaves the default
  listing, shows under ``state=deleted``/``any``, and every per-user endpoint
  and the bulk presence call treat it as unknown. The ``id`` filter takes at
  most 100 ids (400 beyond); unknown ids are left out. ``pageSize`` 1..500
  (default 25), ``pageNumber`` ≥ 1, else 400. ``nextUri`` etc. are relative.
- Bulk presence: 1..50 ids (400 otherwise); unknown or deleted ids are left out
  of the list. REST presence bodies spell ``systemPresence`` in title case
  ("On Queue"); ``/api/v2/presence/definitions`` uses the SDK enum
  (``OnQueue``); stream frames use upper snake case or title case at random
  (deterministic per seed).
- Rate limit per endpoint: ``endpoint_rate_limits`` (default ``GET
  /api/v2/users`` → 180) is a second fixed window per token and route; such a
  reply's ``inin-ratelimit-*`` headers describe the endpoint's window.
- Subscriptions: a malformed or unsupported topic is 400 ``bad.request``; a
  well-formed topic for an unknown, deleted or restricted user is 403
  ``forbidden``; with ``ignoreErrors=true`` the reply lists them ``Rejected``
  (``rejectionReason`` "Invalid topic", "Entity not found" or "Missing
  permissions" -- the SDK types it as free text -- and ``missingPermissions``)
  after the channel's whole ``Permitted`` list, and nothing rejected is
  subscribed. Only user presence and
  routing-status topics exist. More than 1,000 topics after the change is 400
  and nothing is applied. Identical topic strings count once; a combined topic
  and a plain topic for the same user are two topics, but a socket still gets
  one frame per change. POST and PUT extend the channel (unless
  ``extend_on_subscribe`` is off); GET and DELETE do not. Another client's
  channel is 404. DELETE answers 200 with no body.
- Channels: "least recently used" means created, subscribed to (REST or
  socket) or connected to. Eviction, expiry and a replacing socket close the
  old socket with code 1000 and a reason; maintenance and shutdown with 1001.
  An expired channel is gone at once (HEAD 404) even between housekeeping
  ticks.
- System messages arrive as ``{"topicName": "v2.system.<systemTopicType>",
  "eventBody": SystemMessageSystemMessage}`` (the SDK models the body, not
  the topic name). ``no_longer_subscribed`` and ``subscription_changed`` drop
  every subscription of the channel: heartbeats go on, no change is
  delivered until the client subscribes again.
- Channel listing: ``includechannels=oauthclient`` lists the client's other
  tokens' channels as ``{"expires"}`` only (the SDK: their ids "will not be
  shown, but will be presented to show their existence").
- Socket messages: subscribe/unsubscribe over the socket follow the REST
  limits (``"result"`` is the HTTP status as a string: "200", "400", "403");
  they extend the channel like POST. Unknown or non-JSON messages get
  ``{"result": "400"}``. A socket whose channel is gone gets
  ``{"result": "404", ...}`` and is closed.
- A stalled socket sends nothing — no change frames, heartbeats, pongs or
  RFC 6455 pongs, no subscribe replies — and what it would have sent is
  lost. A dropped socket is aborted (TCP reset, no close frame). A reader that
  lets more than ``slow_consumer_limit_bytes`` pile up is aborted too.
- Frame faults: ``malformed`` sends an extra truncated copy (not JSON) before
  the real frame, so the change itself still arrives; ``duplicate`` sends the
  frame twice; ``out-of-order`` holds the frame back until right after the
  same user's next change of the same kind on that socket (or 1 s), so it
  arrives stale, as a late frame would. ``count`` counts changes.
- HTTP faults: without ``pathPrefix`` they hit every OAuth and ``/api/v2``
  request (not the WebSocket upgrade, which a ``/channels/`` prefix can
  target); they are served before auth and rate limiting. An injected 429
  carries ``Retry-After: 1``.
- Admin ``PUT /sim/users/{id}/presence`` sets only the presence (use
  ``routing-status`` for the routing status) and always emits a change, even
  when the value is the same.
- The analytics history query (``POST /api/v2/analytics/users/details/query``)
  has its own list of choices and assumed limits in :mod:`bridge.sim.analytics`.
- ``/sim/truth`` lists non-deleted users only; ``/sim/events`` keeps the last
  ``event_log_max`` changes (``firstSeq`` says where it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from bridge.sim.admin import add_admin_routes, admin_middleware
from bridge.sim.analytics import add_analytics_routes
from bridge.sim.api import add_routes, genesys_middleware
from bridge.sim.config import SimConfig
from bridge.sim.org import wall_ms
from bridge.sim.simulator import SIMULATOR_KEY, Simulator
from bridge.sim.sockets import SOCKET_ROUTE, channel_socket

__all__ = ["SHUTDOWN_TIMEOUT_S", "SimConfig", "SimHandle", "Simulator", "build_app", "run_simulator", "serve"]

SHUTDOWN_TIMEOUT_S = 2.0


def build_app(sim: Simulator) -> web.Application:
    """The aiohttp application serving ``sim``."""
    app = web.Application(middlewares=[admin_middleware, genesys_middleware])
    app[SIMULATOR_KEY] = sim
    add_routes(app)
    add_analytics_routes(app)
    app.router.add_get(SOCKET_ROUTE, channel_socket)
    if sim.config.admin_enabled:
        add_admin_routes(app)
    return app


@dataclass(frozen=True)
class SimHandle:
    """A running simulator."""

    host: str
    port: int
    simulator: Simulator

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` — login, API and admin base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT`` — where channels' connectUri point."""
        return f"ws://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def run_simulator(config: SimConfig, clock_ms: Callable[[], int] = wall_ms) -> AsyncIterator[SimHandle]:
    """Serve a simulator on the running loop until the block exits (``clock_ms``: its wall clock)."""
    sim = Simulator(config, clock_ms)
    runner = web.AppRunner(build_app(sim), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = int(runner.addresses[0][1])
    sim.start()
    try:
        yield SimHandle(config.host, port, sim)
    finally:
        await sim.stop()
        await runner.cleanup()


async def serve(config: SimConfig, stop: asyncio.Event, on_ready: Callable[[SimHandle], None]) -> None:
    """Serve until ``stop`` is set; ``on_ready`` runs once the port is bound."""
    async with run_simulator(config) as handle:
        on_ready(handle)
        await stop.wait()
