"""The simulator's state in one object: org, generator, channels, tokens, limits, faults, counters.

HTTP and WebSocket handlers reach it through ``request.app[SIMULATOR_KEY]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from bridge.sim.auth import TokenStore
from bridge.sim.channels import (
    CLOSE_SHUTDOWN,
    CLOSE_TOKEN_REVOKED,
    REJECTED_NOT_FOUND,
    Channel,
    ChannelRegistry,
)
from bridge.sim.config import SimConfig
from bridge.sim.frames import ChangeEncoder, encode, ws_text_frame
from bridge.sim.generator import Generator, initial_state
from bridge.sim.org import Change, Org, iso_ms, wall_ms
from bridge.sim.ratelimit import RateLimiter

__all__ = [
    "DEFAULT_MISSING_PERMISSIONS",
    "EXPAND_PARTS",
    "HOUSEKEEPING_INTERVAL_S",
    "SIMULATOR_KEY",
    "SYSTEM_MESSAGE_REASONS",
    "SYSTEM_TOPIC_TYPES",
    "ExpandFault",
    "HttpFault",
    "Simulator",
]

# Resolution of heartbeats, expiry, maintenance closes and stall ends.
HOUSEKEEPING_INTERVAL_S = 0.02
_SEED_RANGE = 2**32
_API_PATHS = ("/api/", "/oauth/")
#: The simulated org's id (system messages carry it).
ORGANIZATION_ID = "5e2f0c1f-7d01-4f53-9a53-0b6f2c1e6d1a"
#: rejectionReason of a restricted agent's topics (the simulator's own text).
REJECTED_MISSING_PERMISSIONS = "Missing permissions"
_SYSTEM_TEXT = {
    "no_longer_subscribed": "This channel is no longer subscribed to its topics",
    "subscription_changed": "The subscriptions of this channel changed",
    "token_revoked": "The token used with this channel was revoked",
}
#: ``SystemMessageSystemMessage.systemTopicType`` values (SDK enum) and ``reason`` values.
SYSTEM_TOPIC_TYPES = ("no_longer_subscribed", "subscription_changed", "token_revoked")
SYSTEM_MESSAGE_REASONS = ("another_channel_subscribed", "user_tokens_revoked")
#: The reason a system message carries when the fault names none (None: no reason).
_DEFAULT_REASONS: dict[str, str | None] = {
    "no_longer_subscribed": "another_channel_subscribed",
    "subscription_changed": None,
    "token_revoked": "user_tokens_revoked",
}
#: What a restricted agent's topics report missing (a division-scoped user read).
DEFAULT_MISSING_PERMISSIONS = ("directory:user:view",)
#: The parts ``GET /api/v2/users?expand=`` can drop (best effort, per the SDK's UsersApi).
EXPAND_PARTS = ("presence", "routingStatus")


@dataclass(slots=True)
class HttpFault:
    """The next ``remaining`` requests under ``path_prefix`` fail with ``status``."""

    status: int
    remaining: int
    path_prefix: str | None  # None: every OAuth and /api/v2 request


@dataclass(slots=True)
class ExpandFault:
    """The next ``remaining`` user entities of ``GET /api/v2/users?expand=`` come without ``part``."""

    part: str
    remaining: int


class Simulator:
    """Ground truth and every moving part of one simulated Genesys Cloud org."""

    def __init__(self, config: SimConfig, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else random.SystemRandom().randrange(_SEED_RANGE)
        #: Wall-clock ms of the org's changes and of the analytics delay (a test injects its own).
        self.clock_ms = clock_ms
        self.org = Org(
            seed=self.seed,
            event_log_max=config.event_log_max,
            clock_ms=clock_ms,
            history_retention_ms=round(config.analytics_retention_s * 1000),
        )
        self.org.add_users(config.agents, initial_state)
        self.encoder = ChangeEncoder(self.seed)
        self.registry = ChannelRegistry(
            ttl_s=config.channel_ttl_s,
            extend_on_subscribe=config.extend_on_subscribe,
            max_channels=config.max_channels_per_client,
            max_topics=config.max_topics_per_channel,
            rejection=self._rejection,
        )
        self.generator = Generator(
            self.org, seed=self.seed, events_per_sec=config.events_per_sec, paused=config.generator_paused
        )
        self.tokens = TokenStore(config.clients, config.token_ttl_s)
        self.limiter = RateLimiter(
            config.rate_limit_per_min, config.rate_limit_window_s, endpoints=config.endpoint_rate_limits
        )
        self.http_faults: list[HttpFault] = []
        self.expand_faults: list[ExpandFault] = []
        #: Agents whose topics are rejected, with the permissions they report missing.
        self.restricted: dict[str, list[str]] = {}
        self.revoke_ends_channels = config.revoke_ends_channels
        #: The ``analytics`` fault: the analytics query answers 403 (missing permission).
        self.analytics_forbidden = False
        self.requests: Counter[tuple[str, int]] = Counter()
        #: The same requests of a known OAuth client (from its bearer token), by client.
        self.requests_by_client: Counter[tuple[str, str, int]] = Counter()
        self.changes_emitted = 0
        self.org.sink = self._on_change
        self._tasks: list[asyncio.Task[None]] = []

    def _rejection(self, user_id: str) -> tuple[str, list[str]] | None:
        if self.org.active(user_id) is None:
            return REJECTED_NOT_FOUND, []
        missing = self.restricted.get(user_id)
        if missing is not None:
            return REJECTED_MISSING_PERMISSIONS, list(missing)
        return None

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

    def take_expand_drop(self) -> str | None:
        """The part to leave out of the next expanded user entity, consuming one use."""
        if not self.expand_faults:
            return None
        fault = self.expand_faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            self.expand_faults.pop(0)
        return fault.part

    def system_message(self, channel: Channel, topic_type: str, reason: str | None) -> None:
        """Send ``v2.system.<topic_type>`` to the channel's socket and apply its effect.

        ``no_longer_subscribed`` and ``subscription_changed``: the channel's
        subscriptions are gone (heartbeats go on, no event arrives until the
        client subscribes again). ``token_revoked``: the token that created the
        channel stops working and, if :attr:`revoke_ends_channels`, the
        channel ends.
        """
        self.system_message_frame_only(channel, topic_type, reason)
        if topic_type == "token_revoked":
            if channel.token is not None:
                self.tokens.revoke_value(channel.token)
            if self.revoke_ends_channels:
                self.registry.remove(channel, CLOSE_TOKEN_REVOKED)
        else:
            self.registry.unsubscribe_all(channel)

    def _system_body(self, channel: Channel, topic_type: str, reason: str | None) -> dict[str, object]:
        body: dict[str, object] = {
            "channelId": channel.id,
            "systemTopicType": topic_type,
            "correlationId": str(uuid.uuid4()),
            "organizationId": ORGANIZATION_ID,
            "oauthClientId": channel.client_id,
            "message": _SYSTEM_TEXT[topic_type],
        }
        if reason is None:
            reason = _DEFAULT_REASONS[topic_type]
        if reason is not None:
            body["reason"] = reason
        return {"topicName": f"v2.system.{topic_type}", "version": "2", "eventBody": body}

    def revoke_tokens(self, client_id: str | None, end_channels: bool | None) -> int:
        """Revoke live tokens (of one client); end their channels if the switch says so."""
        revoked = self.tokens.revoke(client_id)
        if self.revoke_ends_channels if end_channels is None else end_channels:
            for channel in list(self.registry.channels.values()):
                if channel.token is not None and self.tokens.is_revoked(channel.token):
                    self.system_message_frame_only(channel, "token_revoked", None)
                    self.registry.remove(channel, CLOSE_TOKEN_REVOKED)
        return revoked

    def system_message_frame_only(self, channel: Channel, topic_type: str, reason: str | None) -> None:
        """Send the system message without applying its effect."""
        if channel.session is not None:
            channel.session.enqueue(ws_text_frame(encode(self._system_body(channel, topic_type, reason))))

    def count_request(self, route: str, status: int, client_id: str | None = None) -> None:
        """Count one request by ``METHOD /route/{pattern}`` and status (and by client when known)."""
        self.requests[(route, status)] += 1
        if client_id is not None:
            self.requests_by_client[(client_id, route, status)] += 1

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
        by_client: dict[str, dict[str, dict[str, int]]] = {}
        for (client_id, route, status), count in sorted(self.requests_by_client.items()):
            by_client.setdefault(client_id, {}).setdefault(route, {})[str(status)] = count
        return {
            "channels": channels,
            "sockets": [s.stats() for s in registry.sessions()],
            "requests": requests,
            "requestsByClient": by_client,
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
