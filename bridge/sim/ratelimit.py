"""Per-token request budget, as Genesys applies it (about 300 requests per minute).

A fixed window per token starts with the token's first request. Requests
past the budget are refused (429) and do not count; ``Retry-After`` is the
whole seconds left in the window, at least 1.

Some endpoints have a smaller allowance of their own (``endpoints``: route →
limit, e.g. ``GET /api/v2/users`` → 180): such a request must fit both the
token's window and the endpoint's, and its ``inin-ratelimit-*`` headers
describe the endpoint's window, so a client can pace each endpoint.
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

    def __init__(
        self,
        limit: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        endpoints: dict[str, int] | None = None,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.endpoints = dict(endpoints or {})
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}

    def _peek(self, key: tuple[str, str], limit: int, now: float) -> tuple[float, int, int, bool]:
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        # (start - now) first: start + window - now can round up past the window (61 of 60 s).
        reset = min(math.ceil(self.window_s), max(1, math.ceil((start - now) + self.window_s)))
        return start, count, reset, count < limit

    def check(self, key: str, route: str | None = None) -> Decision:
        """Count one request for ``key`` (on ``route``) if both budgets allow it."""
        now = self._clock()
        windows = [((key, ""), self.limit)]
        endpoint_limit = self.endpoints.get(route) if route is not None else None
        if endpoint_limit is not None:
            windows.append(((key, route or ""), endpoint_limit))
        peeks = [self._peek(k, limit, now) for k, limit in windows]
        allowed = all(p[3] for p in peeks)
        for (k, _limit), (start, count, _reset, _ok) in zip(windows, peeks, strict=True):
            self._windows[k] = (start, count + 1 if allowed else count)
        (_k, limit), (_start, count, reset, _ok) = windows[-1], peeks[-1]
        if not allowed:
            refusing = next(i for i, p in enumerate(peeks) if not p[3])
            limit, count, reset = windows[refusing][1], peeks[refusing][1], peeks[refusing][2]
            return Decision(False, limit, count, reset)
        return Decision(True, limit, count + 1, reset)

    def forget(self, key: str) -> None:
        """Drop the windows of a token that no longer exists."""
        for k in [k for k in self._windows if k[0] == key]:
            del self._windows[k]
