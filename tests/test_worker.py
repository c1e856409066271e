"""The worker's start-up: it waits out a busy Genesys instead of exiting."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

from bridge.errors import RateLimitedError, TransientError
from bridge.genesys.rest import GenesysRest, PresenceDefinition
from bridge.worker import presence_labels


class FlakyDefinitions:
    """presence_definitions() fails with the given errors, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def presence_definitions(self) -> list[PresenceDefinition]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return [PresenceDefinition(id="d1", system_presence="MEAL", label="Lunch")]


def rest(fake: Any) -> GenesysRest:
    return cast(GenesysRest, fake)


async def test_labels_are_retried_through_429_and_5xx() -> None:
    """A storm of 429s (token request included) and 5xx at start-up is waited out, not fatal."""
    fake = FlakyDefinitions(
        RateLimitedError("token request refused: HTTP 429", retry_after=0.01),
        TransientError("GET /api/v2/presence/definitions: HTTP 504"),
        RateLimitedError("HTTP 429", retry_after=0.0),
    )
    labels = await presence_labels(rest(fake), asyncio.Event(), itertools.repeat(0.01))
    assert labels == {"d1": "Lunch"}
    assert fake.calls == 4


async def test_stop_during_the_wait_returns_none() -> None:
    """A stop requested while Genesys is still refusing ends the wait at once with None."""
    fake = FlakyDefinitions(*[TransientError("HTTP 503") for _ in range(100)])
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    labels = await asyncio.wait_for(presence_labels(rest(fake), stop, itertools.repeat(30.0)), 5)
    assert labels is None
