"""The simulator's configuration: one frozen dataclass, every default named once."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from bridge.sim.history import DEFAULT_RETENTION_MS

__all__ = [
    "DEFAULT_AGENTS",
    "DEFAULT_ANALYTICS_DELAY_S",
    "DEFAULT_ANALYTICS_RETENTION_S",
    "DEFAULT_CHANNEL_TTL_S",
    "DEFAULT_CLIENTS",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_ENDPOINT_RATE_LIMITS",
    "DEFAULT_EVENTS_PER_SEC",
    "DEFAULT_EVENT_LOG_MAX",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_HOST",
    "DEFAULT_MAX_CHANNELS_PER_CLIENT",
    "DEFAULT_MAX_TOPICS_PER_CHANNEL",
    "DEFAULT_PORT",
    "DEFAULT_RATE_LIMIT_PER_MIN",
    "DEFAULT_RATE_LIMIT_WINDOW_S",
    "DEFAULT_SLOW_CONSUMER_LIMIT_BYTES",
    "DEFAULT_SOCKET_CLOSING_GRACE_S",
    "DEFAULT_TOKEN_TTL_S",
    "SimConfig",
    "is_loopback_host",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
DEFAULT_AGENTS = 100
DEFAULT_EVENTS_PER_SEC = 10.0
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_CHANNEL_TTL_S = 24 * 3600.0
DEFAULT_TOKEN_TTL_S = 86_400
DEFAULT_RATE_LIMIT_PER_MIN = 300
DEFAULT_RATE_LIMIT_WINDOW_S = 60.0
#: Per-endpoint allowances (``"METHOD /route"`` → requests per window per
#: token) below the token-wide one: Genesys's allowance differs per endpoint
#: (a recorded trace shows ``inin-ratelimit-allowed: 180`` on ``GET /api/v2/users``).
DEFAULT_ENDPOINT_RATE_LIMITS: dict[str, int] = {"GET /api/v2/users": 180}
DEFAULT_SOCKET_CLOSING_GRACE_S = 60.0
DEFAULT_MAX_CHANNELS_PER_CLIENT = 20
DEFAULT_MAX_TOPICS_PER_CHANNEL = 1000
DEFAULT_CLIENT_ID = "sim-client"
DEFAULT_CLIENT_SECRET = "sim-secret"  # noqa: S105 - a documented, public test credential
DEFAULT_CLIENTS: dict[str, str] = {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
# Bounded so a long demo does not grow without end; /sim/events reports the
# oldest sequence number still held.
DEFAULT_EVENT_LOG_MAX = 1_000_000
# A reader that lets this much pile up in the kernel/transport buffers is cut
# (abort), as a real server protects itself from slow consumers.
DEFAULT_SLOW_CONSUMER_LIMIT_BYTES = 64 * 1024 * 1024
#: How long a change takes to show in ``POST /api/v2/analytics/users/details/query``
#: (a simulator choice: Genesys documents no figure, only that analytics lags).
DEFAULT_ANALYTICS_DELAY_S = 5.0
#: How far back each agent's analytics history reaches (by time, not by the log's cap).
DEFAULT_ANALYTICS_RETENTION_S = DEFAULT_RETENTION_MS / 1000


def is_loopback_host(host: str) -> bool:
    """True for binds that only the local machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes one simulator run.

    ``port=0`` binds a free port (tests); ``seed=None`` picks a random seed.
    Durations are seconds.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    agents: int = DEFAULT_AGENTS
    events_per_sec: float = DEFAULT_EVENTS_PER_SEC
    generator_paused: bool = False
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    channel_ttl_s: float = DEFAULT_CHANNEL_TTL_S
    extend_on_subscribe: bool = True
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S
    rate_limit_per_min: int = DEFAULT_RATE_LIMIT_PER_MIN
    rate_limit_window_s: float = DEFAULT_RATE_LIMIT_WINDOW_S
    socket_closing_grace_s: float = DEFAULT_SOCKET_CLOSING_GRACE_S
    max_channels_per_client: int = DEFAULT_MAX_CHANNELS_PER_CLIENT
    max_topics_per_channel: int = DEFAULT_MAX_TOPICS_PER_CHANNEL
    clients: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CLIENTS))
    seed: int | None = None
    admin_token: str | None = None
    event_log_max: int = DEFAULT_EVENT_LOG_MAX
    slow_consumer_limit_bytes: int = DEFAULT_SLOW_CONSUMER_LIMIT_BYTES
    endpoint_rate_limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_ENDPOINT_RATE_LIMITS))
    #: Whether revoking a token (``revoke-tokens``, the ``token_revoked`` fault)
    #: also ends the channels created with it. Genesys does not document which
    #: it does, so it is a switch; a fault body can override it (``endChannels``).
    revoke_ends_channels: bool = False
    #: A change younger than this is not in the analytics answer yet.
    analytics_delay_s: float = DEFAULT_ANALYTICS_DELAY_S
    #: Ended analytics intervals older than this (before the agent's latest change) are dropped.
    analytics_retention_s: float = DEFAULT_ANALYTICS_RETENTION_S

    @property
    def admin_enabled(self) -> bool:
        """The admin API is served on loopback binds, or anywhere with a token."""
        return self.admin_token is not None or is_loopback_host(self.host)
