"""Retry policy as data: one function classifies an error, one generator yields delays.

The shard lifecycle (README "Architecture"): reconnect with exponential backoff and *full*
jitter, capped (60-90 s), reset after a healthy period; a 4xx other than
401/404/408/429 is fatal for the attempt; 401 → refresh the token; 404 on the
channel → make a new channel. Genesys asks clients to honour ``Retry-After``
on 429 and to retry 502/503/504; the REST client does that per
request, so an error that reaches :func:`classify` has already used up its
request-level retries.

Full jitter (delay drawn uniformly from ``[0, min(cap, initial·2ⁿ)]``) spreads a
fleet of shards that lost their sockets at the same moment, so they do not
reconnect in lock-step against the rate limit.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Iterator
from typing import Final

from bridge.errors import (
    AuthError,
    ChannelClosedError,
    ConfigError,
    GenesysError,
    NotFoundError,
    RateLimitedError,
    RequestError,
    TransientError,
)

__all__ = ["Action", "Backoff", "backoff_delays", "classify"]

#: 408 Request Timeout is the one 4xx worth retrying as is.
RETRYABLE_4XX: Final = frozenset({408})
#: The exponent stops growing here; 2**30 times any sane initial delay is past every cap.
MAX_EXPONENT: Final = 30


class Action(enum.Enum):
    """What the caller does about a failure."""

    RETRY = "retry"
    """Back off (or wait ``retry_after``) and try again."""
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - an action name, not a credential
    """Invalidate the OAuth token, then try again."""
    NEW_CHANNEL = "new_channel"
    """The channel is gone (expired, evicted): create a new one."""
    FATAL = "fatal"
    """Give up this attempt and log it (bad request, bad configuration, a bug)."""


def classify(exc: BaseException) -> Action:
    """The one place that maps an error to an :class:`Action`.

    ``TransientError``/``ChannelClosedError``/``RateLimitedError`` and any 408
    → RETRY; ``AuthError`` → REFRESH_TOKEN; ``NotFoundError`` → NEW_CHANNEL;
    ``RequestError``, ``ConfigError`` and anything unknown → FATAL. Raw
    ``OSError``/``TimeoutError`` (should a boundary miss one) → RETRY.
    """
    if isinstance(exc, AuthError):
        return Action.REFRESH_TOKEN
    if isinstance(exc, NotFoundError):
        return Action.NEW_CHANNEL
    if isinstance(exc, TransientError | ChannelClosedError | RateLimitedError):
        return Action.RETRY
    if isinstance(exc, GenesysError) and exc.status in RETRYABLE_4XX:
        return Action.RETRY
    if isinstance(exc, RequestError | ConfigError):
        return Action.FATAL
    if isinstance(exc, GenesysError) and exc.status is not None and exc.status >= 500:
        return Action.RETRY
    if isinstance(exc, OSError | TimeoutError):
        return Action.RETRY
    return Action.FATAL


def backoff_delays(initial_s: float, max_s: float, rng: random.Random) -> Iterator[float]:
    """Endless delays: the n-th (from 0) is uniform in ``[0, min(max_s, initial_s · 2ⁿ)]``."""
    if initial_s <= 0 or max_s <= 0:
        raise ValueError("backoff delays must be positive")
    exponent = 0
    while True:
        yield rng.uniform(0.0, min(max_s, initial_s * (2**exponent)))
        exponent = min(exponent + 1, MAX_EXPONENT)


class Backoff:
    """Full-jitter backoff that starts over after a healthy period.

    Call :meth:`healthy` when a connection is established (connected and
    subscribed) and :meth:`next_delay` after each failure. When the failure
    comes at least ``reset_after_s`` after the last :meth:`healthy`, the
    sequence restarts from ``initial_s``: a socket that ran for an hour and
    then dropped reconnects quickly, one that flaps keeps backing off.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        reset_after_s: float,
        *,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._reset_after_s = reset_after_s
        self._rng = rng
        self._clock = clock
        self._healthy_since: float | None = None
        self._delays = backoff_delays(initial_s, max_s, rng)
        self.attempts = 0
        """Failures since the last reset."""

    def healthy(self) -> None:
        """The connection is up; a failure ``reset_after_s`` from now starts the delays over."""
        self._healthy_since = self._clock()

    def reset(self) -> None:
        """Start the delays over now."""
        self._delays = backoff_delays(self._initial_s, self._max_s, self._rng)
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay to wait before the next attempt after a failure."""
        since = self._healthy_since
        if since is not None:
            self._healthy_since = None
            if self._clock() - since >= self._reset_after_s:
                self.reset()
        self.attempts += 1
        return next(self._delays)
