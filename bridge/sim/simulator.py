"""The simulator's state in one object: org, generator, channels, tokens, limits, faults, counters.

HTTP and WebSocket handlers reach it through ``request.app[SIMULATOR_KEY]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from bridge.sim.auth import TokenStore
from bridge.sim.channels import CLOSE_SHUTDOWN, ChannelRegistry
from bridge.sim.config import SimConfig
from bridge.sim.frames import ChangeEncoder, ws_text_frame
from bridge.sim.generator import Generator, initial_state
from bridge.sim.org import Change, Org, iso_ms, wall_ms
from bridge.sim.ratelimit import RateLimiter

__all__ = ["HOUSEKEEPING_INTERVAL_S", "SIMULATOR_KEY", "HttpFault", "Simulator"]

# Resolution of heartbeats, expiry, maintenance closes and stall ends.
HOUSEKEEPING_INTERVAL_S = 0.02
_SEED_RANGE = 2**32
_API_PATHS = ("/api/", "/oauth/")


@dataclass(slots=True)
class HttpFault:
    """The next ``remaining`` requests under ``path_prefix`` fail with ``status``."""

    status: int
    remaining: int
    path_prefix: str | None  # None: every OAuth and /api/v2 request


class Simulator:
    """Ground truth and every moving part of one simulated Genesys Cloud org."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else random.SystemRandom().randrange(_SEED_RANGE)
        self.org = Org(seed=self.seed, event_log_max=config.event_log_max)
        self.org.add_users(config.agents, initial_state)
        self.encoder = ChangeEncoder(self.seed)
        self.registry = ChannelRegistry(
            ttl_s=config.channel_ttl_s,
            extend_on_subscribe=config.extend_on_subscribe,
            max_channels=config.max_channels_per_client,
            max_topics=config.max_topics_per_channel,
            user_exists=lambda uid: self.org.active(uid) is not None,
        )
        self.generator = Generator(
            self.org, seed=self.seed, events_per_sec=config.events_per_sec, paused=config.generator_paused
        )
        self.tokens = TokenStore(config.clients, config.token_ttl_s)
        self.limiter = RateLimiter(config.rate_limit_per_min, config.rate_limit_window_s)
        self.http_faults: list[HttpFault] = []
        self.requests: Counter[tuple[str, int]] = Counter()
        self.changes_emitted = 0
        self.org.sink = self._on_change
        self._tasks: list[asyncio.Task[None]] = []

    def _on_change(self, change: Change) -> None:
        self.changes_emitted += 1
        targets = self.registry.targets(change)
        if targets:
            self.registry.deliver(
                targets, ws_text_frame(self.encoder.payload(change)), (change.user_id, change.kind)
            )

    # -- background work ---------------------------------------------------------

    async def _housekeep(self) -> None:
        registry = self.registry
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            registry.expire_due()
            registry.release_held()
            now = time.monotonic()
            for session in registry.sessions():
                session.tick(now)

    def start(self) -> None:
        """Start the generator and the housekeeper on the running loop."""
        self._tasks = [
            asyncio.create_task(self.generator.run()),
            asyncio.create_task(self._housekeep()),
        ]

    async def stop(self) -> None:
        """Stop background work and close every socket."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for session in self.registry.sessions():
            session.close(*CLOSE_SHUTDOWN)

    # -- faults and counters -------------------------------------------------------

    def take_http_fault(self, path: str) -> int | None:
        """The status of an armed HTTP fault for this path, consuming one use."""
        for fault in self.http_faults:
            prefixes = fault.path_prefix if fault.path_prefix is not None else _API_PATHS
            if path.startswith(prefixes):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.http_faults.remove(fault)
                return fault.status
        return None

    def count_request(self, route: str, status: int) -> None:
        """Count one request by ``METHOD /route/{pattern}`` and status."""
        self.requests[(route, status)] += 1

    def stats(self) -> dict[str, object]:
        """``GET /sim/stats``."""
        registry = self.registry
        registry.expire_due()
        channels = [
            {
                "id": c.id,
                "clientId": c.client_id,
                "connected": c.session is not None,
                "topics": len(c.topics),
                "topicNames": list(c.topics),
                "userIds": registry.user_ids(c),
                "expires": iso_ms(c.expires_ms),
            }
            for c in registry.channels.values()
        ]
        requests: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.requests.items()):
            requests.setdefault(route, {})[str(status)] = count
        return {
            "channels": channels,
            "sockets": [s.stats() for s in registry.sessions()],
            "requests": requests,
            "changesEmitted": self.changes_emitted,
            "framesDelivered": registry.frames_delivered,
            "framesLost": registry.frames_lost,
            "lastSeq": self.org.last_seq,
            "users": sum(1 for uid in self.org.users if self.org.active(uid) is not None),
            "generator": {"paused": self.generator.paused, "eventsPerSec": self.generator.events_per_sec},
            "liveTokens": self.tokens.live,
            "seed": self.seed,
            "now": iso_ms(wall_ms()),
        }


SIMULATOR_KEY = web.AppKey("simulator", Simulator)
