"""Retry policy: the classification table, full-jitter delays, reset after a healthy period."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import (
    AuthError,
    ChannelClosedError,
    ConfigError,
    GenesysError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from bridge.genesys.retry import Action, Backoff, backoff_delays, classify


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (TransientError("503", status=503), Action.RETRY),
        (ChannelClosedError("closed"), Action.RETRY),
        (RateLimitedError("429", retry_after=3), Action.RETRY),
        (AuthError("401", status=401), Action.REFRESH_TOKEN),
        (NotFoundError("404", status=404), Action.NEW_CHANNEL),
        (RequestError("400", status=400), Action.FATAL),
        (RequestError("403", status=403), Action.FATAL),
        (RequestError("408", status=408), Action.RETRY),
        (GenesysError("408", status=408), Action.RETRY),
        (GenesysError("500", status=500), Action.RETRY),
        (ConfigError("bad"), Action.FATAL),
        (ProtocolError("bad", reason="x"), Action.FATAL),
        (OSError("reset"), Action.RETRY),
        (TimeoutError(), Action.RETRY),
        (ValueError("bug"), Action.FATAL),
    ],
)
def test_classification_table(exc: BaseException, action: Action) -> None:
    """Each error class maps to the action the shard lifecycle prescribes."""
    assert classify(exc) is action


@given(
    initial=st.floats(0.01, 5),
    cap=st.floats(0.01, 120),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_within_cap(initial: float, cap: float, seed: int) -> None:
    """Every delay lies in [0, min(cap, initial·2ⁿ)]."""
    delays = backoff_delays(initial, cap, random.Random(seed))
    for n in range(40):
        assert 0.0 <= next(delays) <= min(cap, initial * 2**n)


def test_full_jitter_uses_the_whole_range() -> None:
    """Delays are spread over the whole window, not bunched at the cap (full jitter)."""
    delays = backoff_delays(1.0, 8.0, random.Random(7))
    for _ in range(10):
        next(delays)
    late = [next(delays) for _ in range(2000)]
    assert max(late) <= 8.0
    assert min(late) < 0.5 and max(late) > 7.5
    assert 3.5 < sum(late) / len(late) < 4.5


def test_backoff_delays_reject_non_positive() -> None:
    """Non-positive bounds are a programming error."""
    with pytest.raises(ValueError):
        next(backoff_delays(0, 1, random.Random()))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_then_resets_after_healthy_period() -> None:
    """Failures escalate; a failure after reset_after_s of health starts over from initial."""
    clock = FakeClock()
    backoff = Backoff(1.0, 60.0, 30.0, rng=random.Random(1), clock=clock)
    for _ in range(8):
        backoff.next_delay()
    assert backoff.attempts == 8
    backoff.healthy()
    clock.now += 29.0
    backoff.next_delay()
    assert backoff.attempts == 9  # a flap: not healthy long enough
    backoff.healthy()
    clock.now += 30.0
    delay = backoff.next_delay()
    assert backoff.attempts == 1
    assert 0.0 <= delay <= 1.0


def test_backoff_reset_now() -> None:
    """reset() starts the sequence over immediately."""
    backoff = Backoff(0.5, 10.0, 30.0, rng=random.Random(2), clock=FakeClock())
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 0.5
