"""How fast one OAuth client may call Genesys: a shared request budget and the per-endpoint allowances.

About 300 requests per minute per token, and Genesys asks for one token per
client: one :class:`~bridge.genesys.rest.GenesysRest` per OAuth client per process, and every
caller of it shares one :class:`RequestBudget` of ``budget_per_min``
(default below 300 to leave a margin). The budget is a token bucket whose
tokens come back one window (60 s) after they were spent, so no 60-second
window ever holds more than ``budget_per_min`` requests, retries included.
That is the ceiling; below it each endpoint follows Genesys's own
allowance: replies carry ``inin-ratelimit-allowed`` / ``-count`` /
``-reset`` (seconds), which differ per endpoint (e.g. 180 on ``GET
/api/v2/users``). :class:`EndpointAllowances` keeps what the last reply of
each endpoint said; when an endpoint's window is spent its next request
waits for the reset instead of earning a 429. What is left shows in
``bridge_genesys_rate_limit_remaining{endpoint}``. (These headers come from
Genesys's API documentation and traces; the SDK does not model them.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from bridge.metrics import GENESYS_RATE_LIMIT_REMAINING

__all__ = [
    "BUDGET_WINDOW_S",
    "RATELIMIT_ALLOWED",
    "RATELIMIT_COUNT",
    "RATELIMIT_RESET",
    "EndpointAllowances",
    "RequestBudget",
    "Sleep",
]

#: The budget's window: Genesys's limit is per minute.
BUDGET_WINDOW_S: Final = 60.0
RATELIMIT_ALLOWED: Final = "inin-ratelimit-allowed"
RATELIMIT_COUNT: Final = "inin-ratelimit-count"
RATELIMIT_RESET: Final = "inin-ratelimit-reset"

Sleep = Callable[[float], Awaitable[None]]


class RequestBudget:
    """At most ``per_window`` requests in any ``window_s`` (a bucket whose tokens return after a window).

    Shared by every caller of one client; waiting callers are served in
    arrival order. :meth:`pause_until` holds everyone back after a 429.
    """

    def __init__(
        self,
        per_window: int,
        *,
        window_s: float = BUDGET_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_window < 1:
            raise ValueError("the request budget must allow at least one request")
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._spent: deque[float] = deque()
        self._not_before = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more request fits, then spend it."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._spent and now - self._spent[0] >= self.window_s:
                    self._spent.popleft()
                if self._not_before > now:
                    wait = self._not_before - now
                elif len(self._spent) >= self.per_window:
                    wait = self._spent[0] + self.window_s - now
                else:
                    self._spent.append(now)
                    return
                await self._sleep(wait)

    def spare(self) -> int:
        """Requests that could be sent right now without waiting (0 while paused after a 429)."""
        now = self._clock()
        if self._not_before > now:
            return 0
        recent = sum(1 for spent in self._spent if now - spent < self.window_s)
        return max(0, self.per_window - recent)

    def pause_until(self, when: float) -> None:
        """Send nothing before the monotonic time ``when`` (Genesys said Retry-After)."""
        self._not_before = max(self._not_before, when)


class EndpointAllowances:
    """Genesys's per-endpoint allowance, as the ``inin-ratelimit-*`` headers of its replies state it.

    For each endpoint the last reply said how many requests its window allows
    and how many were made, and when the window resets. :meth:`acquire` lets
    a request through while some are left (counting the ones in flight) and
    otherwise waits for the reset; an endpoint never heard from, or whose
    window has reset, is not held back. It only ever slows requests down:
    the :class:`RequestBudget` ceiling applies on top.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        # endpoint -> [remaining after the last reply, reset (monotonic), requests in flight]
        self._state: dict[str, list[float]] = {}

    def remaining(self, endpoint: str) -> int | None:
        """Requests left in the endpoint's window as last reported (None: unknown or reset)."""
        state = self._state.get(endpoint)
        if state is None or state[1] <= self._clock():
            return None
        return int(state[0])

    async def acquire(self, endpoint: str) -> None:
        """Wait, if the endpoint's window is spent, until it resets; then count one in flight."""
        while True:
            state = self._state.setdefault(endpoint, [0.0, 0.0, 0.0])
            now = self._clock()
            if state[1] <= now or state[0] - state[2] > 0:
                state[2] += 1
                return
            await self._sleep(state[1] - now)

    def release(self, endpoint: str, headers: Mapping[str, str] | None) -> None:
        """One request ended; learn the endpoint's allowance from its reply's headers (if any)."""
        state = self._state.setdefault(endpoint, [0.0, 0.0, 0.0])
        state[2] = max(0.0, state[2] - 1)
        if headers is None:
            return
        try:
            allowed = int(headers[RATELIMIT_ALLOWED])
            count = int(headers[RATELIMIT_COUNT])
            reset_s = float(headers[RATELIMIT_RESET])
        except (KeyError, ValueError):
            return
        state[0] = float(max(0, allowed - count))
        state[1] = self._clock() + max(0.0, reset_s)
        GENESYS_RATE_LIMIT_REMAINING.labels(endpoint=endpoint).set(state[0])
