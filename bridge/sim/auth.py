"""OAuth client credentials and bearer tokens.

``POST /oauth/token`` with HTTP Basic ``client_id:client_secret`` and form
``grant_type=client_credentials`` returns ``access_token``, ``token_type``
("bearer") and ``expires_in``. A token is valid until it expires or is revoked
(admin fault ``revoke-tokens``). Whether revoking a token also ends the
channels created with it is a simulator switch (``revoke_ends_channels``):
Genesys does not document it, but it has a ``token_revoked`` system message.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Token", "TokenStore", "parse_basic"]


@dataclass(slots=True)
class Token:
    """An issued bearer token."""

    value: str
    client_id: str
    expires_mono: float
    revoked: bool = False


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(id:secret)`` → (id, secret); None when absent or malformed."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


class TokenStore:
    """Known clients and the tokens issued to them."""

    def __init__(
        self, clients: dict[str, str], ttl_s: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clients = dict(clients)
        self.ttl_s = ttl_s
        self._clock = clock
        self._tokens: dict[str, Token] = {}

    def issue(self, client_id: str, secret: str) -> Token | None:
        """A new token for valid credentials, else None."""
        expected = self.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, secret):
            return None
        self._purge()
        token = Token(secrets.token_urlsafe(32), client_id, self._clock() + self.ttl_s)
        self._tokens[token.value] = token
        return token

    def validate(self, value: str) -> Token | None:
        """The token if it is known, unexpired and unrevoked."""
        token = self._tokens.get(value)
        if token is None or token.revoked or token.expires_mono <= self._clock():
            return None
        return token

    def revoke(self, client_id: str | None = None) -> int:
        """Revoke every live token (of one client, if given); returns how many."""
        count = 0
        for token in self._tokens.values():
            if not token.revoked and (client_id is None or token.client_id == client_id):
                token.revoked = True
                count += 1
        return count

    def revoke_value(self, value: str) -> bool:
        """Revoke one token by value; False if it was unknown or already revoked."""
        token = self._tokens.get(value)
        if token is None or token.revoked:
            return False
        token.revoked = True
        return True

    def is_revoked(self, value: str) -> bool:
        """True for a known token that was revoked."""
        token = self._tokens.get(value)
        return token is not None and token.revoked

    def _purge(self) -> None:
        now = self._clock()
        for value in [v for v, t in self._tokens.items() if t.expires_mono <= now]:
            del self._tokens[value]

    @property
    def live(self) -> int:
        """Tokens that would still be accepted."""
        now = self._clock()
        return sum(1 for t in self._tokens.values() if not t.revoked and t.expires_mono > now)
