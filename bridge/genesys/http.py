"""HTTP replies → the exception tree, written once for the REST API, the login host and the socket handshake.

Each kind of request maps statuses a little differently, so there is one
:class:`StatusErrors` table per kind, side by side here:

====================  ==============  ==============  ===================
status                REST            token request   socket handshake
====================  ==============  ==============  ===================
401                   AuthError       AuthError       AuthError
403                   RequestError    AuthError       AuthError
404                   NotFoundError   RequestError    NotFoundError
408, any 5xx          TransientError  TransientError  ChannelClosedError
429                   RateLimited     RateLimited     ChannelClosedError
any other             RequestError    RequestError    ChannelClosedError
====================  ==============  ==============  ===================

A 401 from the REST API has already been retried once with a fresh token
(:mod:`bridge.genesys.auth`); a 400 from the login host whose OAuth ``error``
says the credentials are wrong is an :class:`AuthError` too (decided in
:mod:`bridge.genesys.auth`, which reads the body). What the caller then does
about each error is :func:`bridge.genesys.retry.classify`.

``Retry-After`` (on a 429) is read by :func:`retry_after_s`: a number of
seconds; a missing or unusable value waits :data:`DEFAULT_RETRY_AFTER_S`.
This module does no I/O and imports no HTTP library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from bridge.errors import (
    AuthError,
    ChannelClosedError,
    GenesysError,
    NotFoundError,
    RateLimitedError,
    RequestError,
    TransientError,
)

__all__ = [
    "DEFAULT_RETRY_AFTER_S",
    "HANDSHAKE_ERRORS",
    "NO_STATUS",
    "REST_ERRORS",
    "RETRY_AFTER",
    "TOKEN_ERRORS",
    "StatusErrors",
    "error_text",
    "retry_after_s",
]

#: The header of a 429 that says how many seconds to wait.
RETRY_AFTER: Final = "Retry-After"
#: Used when a 429 has no usable Retry-After header.
DEFAULT_RETRY_AFTER_S: Final = 5.0
#: The ``status`` label of a request that got no HTTP reply at all.
NO_STATUS: Final = "error"
#: Genesys error messages are short; this bounds a hostile or HTML body in an exception.
ERROR_TEXT_LIMIT: Final = 300
#: The first status of the server errors.
_SERVER_ERROR: Final = 500


def retry_after_s(raw: str | None, default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds a ``Retry-After`` value asks for (never negative); ``default`` when missing or not a number."""
    if not raw:
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        return default


def error_text(content: bytes) -> str:
    """``": <message> / <code>"`` from a Genesys error body, bounded; empty when it has neither.

    Only the body's ``message`` and ``code`` are used, never headers (which
    could carry a token).
    """
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k]) for k in ("message", "code") if isinstance(body.get(k), str | int)]
    return (": " + " / ".join(parts))[:ERROR_TEXT_LIMIT] if parts else ""


@dataclass(frozen=True, slots=True)
class StatusErrors:
    """Status → exception class for one kind of request: listed statuses, then 5xx, then the rest."""

    by_status: Mapping[int, type[GenesysError]]
    server_error: type[GenesysError]
    otherwise: type[GenesysError]

    def kind(self, status: int) -> type[GenesysError]:
        """The exception class for an error reply of ``status``."""
        listed = self.by_status.get(status)
        if listed is not None:
            return listed
        return self.server_error if status >= _SERVER_ERROR else self.otherwise

    def error(
        self, status: int, message: str, *, endpoint: str | None = None, retry_after: str | None = None
    ) -> GenesysError:
        """The exception for an error reply; ``retry_after`` is the raw header (read only for a 429)."""
        kind = self.kind(status)
        if kind is RateLimitedError:
            return RateLimitedError(message, retry_after=retry_after_s(retry_after), endpoint=endpoint)
        return kind(message, status=status, endpoint=endpoint)


_UNAUTHORIZED: Final = 401
_FORBIDDEN: Final = 403
_NOT_FOUND: Final = 404
_REQUEST_TIMEOUT: Final = 408
_TOO_MANY_REQUESTS: Final = 429

#: What the API and the login host both say about a request worth retrying.
_RETRIED: Final[Mapping[int, type[GenesysError]]] = {
    _REQUEST_TIMEOUT: TransientError,
    _TOO_MANY_REQUESTS: RateLimitedError,
}
#: Replies of the REST API (after the auth flow's one retry of a 401).
REST_ERRORS: Final = StatusErrors(
    {_UNAUTHORIZED: AuthError, _NOT_FOUND: NotFoundError, **_RETRIED},
    server_error=TransientError,
    otherwise=RequestError,
)
#: Replies of the login host to a token request.
TOKEN_ERRORS: Final = StatusErrors(
    {_UNAUTHORIZED: AuthError, _FORBIDDEN: AuthError, **_RETRIED},
    server_error=TransientError,
    otherwise=RequestError,
)
#: A refused notification socket handshake: 404 is a gone channel, anything unexpected a closed socket.
HANDSHAKE_ERRORS: Final = StatusErrors(
    {_UNAUTHORIZED: AuthError, _FORBIDDEN: AuthError, _NOT_FOUND: NotFoundError},
    server_error=ChannelClosedError,
    otherwise=ChannelClosedError,
)
