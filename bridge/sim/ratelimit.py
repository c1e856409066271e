"""Per-token request budget, as Genesys applies it (about 300 requests per minute).

A fixed window per token starts with the token's first request. Requests
past the budget are refused (429) and do not count; ``Retry-After`` is the
whole seconds left in the window, at least 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Decision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request, and the values of the ``inin-ratelimit-*`` headers."""

    allowed: bool
    limit: int
    count: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """Headers for a normal reply."""
        return {
            "inin-ratelimit-allowed": str(self.limit),
            "inin-ratelimit-count": str(self.count),
            "inin-ratelimit-reset": str(self.reset_s),
        }


class RateLimiter:
    """Fixed-window counter per key (the bearer token)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def check(self, key: str) -> Decision:
        """Count one request for ``key`` if the budget allows it."""
        now = self._clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        reset = max(1, math.ceil(start + self.window_s - now))
        if count >= self.limit:
            self._windows[key] = (start, count)
            return Decision(False, self.limit, count, reset)
        self._windows[key] = (start, count + 1)
        return Decision(True, self.limit, count + 1, reset)

    def forget(self, key: str) -> None:
        """Drop the window of a token that no longer exists."""
        self._windows.pop(key, None)
