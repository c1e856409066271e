"""The Genesys Cloud client layer (README "Architecture"): regions, auth, REST, protocol, socket.

* :mod:`~bridge.genesys.regions` — region domain → base URLs, overrides.
* :mod:`~bridge.genesys.retry` — retry policy as data (classify, full-jitter delays).
* :mod:`~bridge.genesys.protocol` — sans-I/O notification frames → typed messages.
* :mod:`~bridge.genesys.auth` — OAuth client credentials as an async ``httpx.Auth``.
* :mod:`~bridge.genesys.rest` — the REST client (budget, retries, typed replies).
* :mod:`~bridge.genesys.socket` — the thin aiohttp shell around one notification socket.
"""

from __future__ import annotations

from bridge.genesys.auth import ClientCredentialsAuth
from bridge.genesys.protocol import (
    EventMessage,
    Heartbeat,
    Message,
    Pong,
    SocketClosing,
    SubscriptionReply,
    SystemMessage,
    UnknownTopic,
    parse_frame,
    ping_frame,
    presence_change,
    routing_change,
    subscribe_frame,
    unsubscribe_frame,
    user_topic,
)
from bridge.genesys.regions import REGION_DOMAINS, BaseUrls, base_urls, region_urls
from bridge.genesys.rest import (
    ChannelInfo,
    GenesysRest,
    PresenceDefinition,
    RequestBudget,
    RoutingStatus,
    User,
    UserPresence,
    UserWithStatus,
)
from bridge.genesys.retry import Action, Backoff, backoff_delays, classify
from bridge.genesys.socket import NotificationSocket

__all__ = [
    "REGION_DOMAINS",
    "Action",
    "Backoff",
    "BaseUrls",
    "ChannelInfo",
    "ClientCredentialsAuth",
    "EventMessage",
    "GenesysRest",
    "Heartbeat",
    "Message",
    "NotificationSocket",
    "Pong",
    "PresenceDefinition",
    "RequestBudget",
    "RoutingStatus",
    "SocketClosing",
    "SubscriptionReply",
    "SystemMessage",
    "UnknownTopic",
    "User",
    "UserPresence",
    "UserWithStatus",
    "backoff_delays",
    "base_urls",
    "classify",
    "parse_frame",
    "ping_frame",
    "presence_change",
    "region_urls",
    "routing_change",
    "subscribe_frame",
    "unsubscribe_frame",
    "user_topic",
]
