"""OAuth client credentials for Genesys Cloud, as an async ``httpx.Auth`` flow.

Genesys behaviour followed:

* ``POST {login_url}/oauth/token`` with HTTP Basic ``client_id:client_secret``
  and the form body ``grant_type=client_credentials``; the reply carries
  ``access_token``, ``token_type`` ("bearer") and ``expires_in`` (seconds,
  org-configurable between 300 and 172,800, default 86,400).
* Genesys asks clients to use one token rather than many, so the token is
  cached and shared by every request of the client.
* A token can be revoked at any time: a 401 from the API invalidates it and
  the request is retried once with a fresh token (the second 401 reaches the
  caller, which maps it to :class:`~bridge.errors.AuthError`).

Refresh happens ahead of expiry, at the earlier of :data:`REFRESH_FRACTION`
of the lifetime and :data:`REFRESH_MARGIN_S` before expiry, but never before
:data:`MIN_REFRESH_FRACTION` of the lifetime (for the short lifetimes of test
orgs). One task refreshes at a time (an ``asyncio.Lock``); callers that
arrive meanwhile wait and take the same new token. When a refresh fails with
a transient error while the old token is still valid, the old token keeps
being used.

Secrets: neither the client secret nor a token ever appears in an exception,
a log record or a ``repr`` (``__repr__`` masks them; errors carry the status
and Genesys's ``error`` code only, and are raised ``from None`` so no httpx
object with headers rides along).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Final

import httpx
import orjson
from pydantic import SecretStr

from bridge.errors import AuthError, GenesysError, RateLimitedError, RequestError, TransientError
from bridge.genesys.http import NO_STATUS, RETRY_AFTER, TOKEN_ERRORS
from bridge.metrics import GENESYS_HTTP_REQUESTS

__all__ = [
    "MIN_REFRESH_FRACTION",
    "REFRESH_FRACTION",
    "REFRESH_MARGIN_S",
    "TOKEN_PATH",
    "ClientCredentialsAuth",
]

logger = logging.getLogger(__name__)

TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a URL path, not a credential
#: Refresh after this share of the token's lifetime…
REFRESH_FRACTION: Final = 0.8
#: …or this long before it expires, whichever comes first…
REFRESH_MARGIN_S: Final = 300.0
#: …but never before this share of the lifetime (a 300 s token is not refreshed on every call).
MIN_REFRESH_FRACTION: Final = 0.5
#: Timeout of one token request.
DEFAULT_TOKEN_TIMEOUT_S: Final = 15.0
#: OAuth ``error`` codes that mean the credentials themselves are wrong.
CREDENTIAL_ERRORS: Final = frozenset({"invalid_client", "unauthorized_client", "invalid_grant"})
_MASK: Final = "**********"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"_Token(value={_MASK!r}, refresh_at={self.refresh_at}, expires_at={self.expires_at})"


def refresh_delay(lifetime_s: float) -> float:
    """Seconds after issue at which a token of ``lifetime_s`` is refreshed."""
    ahead = min(REFRESH_FRACTION * lifetime_s, lifetime_s - REFRESH_MARGIN_S)
    return max(ahead, MIN_REFRESH_FRACTION * lifetime_s)


class ClientCredentialsAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <token>`` to every request; async only.

    Token requests go through ``client`` (an ``httpx.AsyncClient`` the caller
    owns) or, when it is not given, a client of its own over ``transport``
    (closed by :meth:`aclose`). ``clock`` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: SecretStr | str,
        *,
        login_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = DEFAULT_TOKEN_TIMEOUT_S,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        self.login_url = login_url.rstrip("/")
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(transport=transport, timeout=timeout_s)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: _Token | None = None
        self.refreshes = 0
        """Tokens fetched so far (for tests and logs)."""

    def __repr__(self) -> str:
        state = "cached" if self._token is not None else "none"
        return (
            f"ClientCredentialsAuth(client_id={self.client_id!r}, login_url={self.login_url!r}, "
            f"client_secret={_MASK!r}, token={state})"
        )

    __str__ = __repr__

    async def aclose(self) -> None:
        """Close the token client if this object created it."""
        if self._own_client:
            await self._client.aclose()

    # ------------------------------------------------------------------ tokens

    async def token(self) -> str:
        """A valid access token: the cached one, or a fresh one fetched by exactly one task."""
        cached = self._token
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        async with self._lock:
            cached = self._token
            now = self._clock()
            if cached is not None and now < cached.refresh_at:
                return cached.value  # another task refreshed while we waited
            try:
                self._token = await self._fetch()
            except (TransientError, RateLimitedError) as exc:
                if cached is not None and now < cached.expires_at:
                    logger.warning("token refresh failed (%s); the current token is still valid", exc)
                    return cached.value
                raise
            return self._token.value

    async def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still ``token``, when given).

        Passing the token that failed keeps concurrent 401s from throwing
        away a token another task has just fetched.
        """
        async with self._lock:
            if self._token is not None and (token is None or self._token.value == token):
                self._token = None

    async def _fetch(self) -> _Token:
        started = self._clock()
        try:
            response = await self._client.post(
                f"{self.login_url}{TOKEN_PATH}",
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self._secret.get_secret_value()),
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as exc:
            GENESYS_HTTP_REQUESTS.labels(endpoint=TOKEN_PATH, status=NO_STATUS).inc()
            raise TransientError(f"token request failed: {type(exc).__name__}", endpoint=TOKEN_PATH) from None
        except httpx.HTTPError as exc:
            GENESYS_HTTP_REQUESTS.labels(endpoint=TOKEN_PATH, status=NO_STATUS).inc()
            raise RequestError(f"token request failed: {type(exc).__name__}", endpoint=TOKEN_PATH) from None
        status = response.status_code
        GENESYS_HTTP_REQUESTS.labels(endpoint=TOKEN_PATH, status=str(status)).inc()
        body = _json_object(response.content)
        if status != httpx.codes.OK:
            raise _token_error(status, body, response.headers.get(RETRY_AFTER))
        value = body.get("access_token")
        lifetime = body.get("expires_in")
        if not isinstance(value, str) or not value:
            raise AuthError("token reply has no access_token", status=status, endpoint=TOKEN_PATH)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise AuthError("token reply has no valid expires_in", status=status, endpoint=TOKEN_PATH)
        self.refreshes += 1
        logger.debug("obtained an access token for client %s, lifetime %s s", self.client_id, lifetime)
        return _Token(
            value=value, refresh_at=started + refresh_delay(lifetime), expires_at=started + lifetime
        )

    # ------------------------------------------------------------------ httpx flow

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Not supported: the bridge is asyncio throughout."""
        raise RuntimeError("ClientCredentialsAuth works with httpx.AsyncClient only")
        yield request  # pragma: no cover - makes this a generator

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send with the cached token; after a 401, invalidate it and resend once with a fresh one."""
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == httpx.codes.UNAUTHORIZED:
            await self.invalidate(token)
            token = await self.token()
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def _json_object(content: bytes) -> dict[str, object]:
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _token_error(status: int, body: dict[str, object], retry_after: str | None) -> GenesysError:
    code = body.get("error")
    detail = f" ({code})" if isinstance(code, str) and code.isidentifier() else ""
    message = f"token request refused: HTTP {status}{detail}"
    if code in CREDENTIAL_ERRORS and status == httpx.codes.BAD_REQUEST:
        return AuthError(message, status=status, endpoint=TOKEN_PATH)
    return TOKEN_ERRORS.error(status, message, endpoint=TOKEN_PATH, retry_after=retry_after)
