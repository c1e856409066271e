"""What the Genesys client layer is configured with: plain values, no application settings.

:class:`ClientConfig` is everything one :class:`~bridge.genesys.rest.GenesysRest`
(and its OAuth flow) needs besides the client's credentials. The layer never
reads the application's :class:`~bridge.settings.Settings`; the worker builds
a :class:`ClientConfig` from them (:func:`bridge.worker.genesys_config`), and
the settings take their defaults from the constants here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_BACKOFF_INITIAL_S",
    "DEFAULT_REST_BUDGET_PER_MIN",
    "DEFAULT_REST_MAX_RETRIES",
    "DEFAULT_REST_TIMEOUT_S",
    "ClientConfig",
]

#: Genesys allows about 300 requests/min per token; keep a margin for other callers.
DEFAULT_REST_BUDGET_PER_MIN: Final = 240
#: Timeout of one REST (and token) request.
DEFAULT_REST_TIMEOUT_S: Final = 15.0
#: Retries of one REST request after a 429, a 5xx, a 408 or a transport error.
DEFAULT_REST_MAX_RETRIES: Final = 6
#: First delay of the full-jitter backoff (REST retries and the shard's reconnects).
DEFAULT_BACKOFF_INITIAL_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where one OAuth client's requests go and how they are paced and retried.

    ``login_url`` and ``api_url`` are base URLs without a trailing slash
    (:func:`bridge.genesys.regions.base_urls` makes them from a region).
    """

    login_url: str
    api_url: str
    budget_per_min: int = DEFAULT_REST_BUDGET_PER_MIN
    timeout_s: float = DEFAULT_REST_TIMEOUT_S
    max_retries: int = DEFAULT_REST_MAX_RETRIES
    retry_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
