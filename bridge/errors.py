"""The one exception tree of presence-bridge.

Third-party errors (httpx, aiohttp, confluent-kafka, pydantic) are mapped
to these at the module boundary where they occur, so callers never need to
know which library failed::

    BridgeError
    ├── ConfigError                 bad or missing settings (fatal at start-up)
    ├── GenesysError                anything the Genesys Cloud API did or refused
    │   ├── AuthError               401 / bad client credentials: refresh the token
    │   ├── RateLimitedError        429: wait ``retry_after`` seconds
    │   ├── TransientError          502/503/504, other 5xx, transport failures: retry with backoff
    │   ├── NotFoundError           404: the channel (or user) no longer exists
    │   ├── RequestError            any other 4xx: fatal for this attempt, logged
    │   └── ChannelClosedError      the notification socket closed, dropped or went silent
    ├── ProtocolError               a frame that cannot be understood (goes to the DLQ)
    └── SinkError                   Kafka side
        ├── FencedError             another owner took the shard's transactional.id
        ├── DeliveryError           records could not be committed (retried by the sink)
        └── AuthorizationError      an ACL the bridge needs is missing (fatal: the worker exits)

Messages never contain secrets: bearer tokens and client secrets are never
formatted into an exception (see ``bridge.genesys.auth``).
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "AuthorizationError",
    "BridgeError",
    "ChannelClosedError",
    "ConfigError",
    "DeliveryError",
    "FencedError",
    "GenesysError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitedError",
    "RequestError",
    "SinkError",
    "TransientError",
]


class BridgeError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(BridgeError):
    """The settings are missing or inconsistent."""


class GenesysError(BridgeError):
    """The Genesys Cloud API failed or refused a request.

    ``status`` is the HTTP status when there was one; ``endpoint`` names the
    templated path (``/api/v2/users/{id}/routingstatus``), never a token.
    """

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class AuthError(GenesysError):
    """401: the token is invalid, expired or revoked, or the credentials are wrong."""


class RateLimitedError(GenesysError):
    """429 from Genesys (``too.many.requests.retry.after``)."""

    def __init__(
        self, message: str, *, retry_after: float, status: int | None = 429, endpoint: str | None = None
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.retry_after = retry_after


class TransientError(GenesysError):
    """A failure worth retrying after a backoff: 5xx or a transport error."""


class NotFoundError(GenesysError):
    """404: the resource is gone (e.g. the channel expired or was evicted)."""


class RequestError(GenesysError):
    """A 4xx other than 401/404/408/429: the request itself is wrong."""


class ChannelClosedError(GenesysError):
    """The notification WebSocket closed, dropped or stopped answering."""


class ProtocolError(BridgeError):
    """A frame could not be understood; ``reason`` is a short stable slug for metrics."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SinkError(BridgeError):
    """Kafka refused or failed a write."""


class FencedError(SinkError):
    """A newer producer with the same ``transactional.id`` fenced this one."""


class DeliveryError(SinkError):
    """A transaction could not be committed; the sink retries it."""


class AuthorizationError(SinkError):
    """Kafka refused an operation for lack of an ACL; retrying cannot help.

    ``operation`` is the ACL operation (``WRITE``, ``READ``, ``CREATE``, ...),
    ``resource`` the resource it is needed on (``TOPIC genesys.presence.v1``,
    ``GROUP presence-bridge``, ``TRANSACTIONAL_ID presence-bridge-shard-0``).
    """

    def __init__(self, operation: str, resource: str, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"Kafka authorization failed: {operation} on {resource} is not granted to the bridge's "
            f'principal{suffix}; see README "Production Kafka" for the ACLs it needs'
        )
        self.operation = operation
        self.resource = resource
