"""The worker: it builds the Genesys clients from the settings, and waits out a busy Genesys at start-up."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

from bridge.errors import RateLimitedError, TransientError
from bridge.genesys.models import PresenceDefinition
from bridge.genesys.rest import GenesysRest
from bridge.settings import GenesysClient, Settings
from bridge.worker import genesys_config, genesys_rest, presence_labels
from tests.genesys.fakes import API_URL, CLIENT_ID, LOGIN_URL, SECRET, FakeLogin, json_response, transport
from tests.genesys.test_rest import CHANNEL_REPLY


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


async def test_from_settings_uses_overrides() -> None:
    """genesys_rest builds auth + client from Settings, honouring explicit base URLs."""
    settings = Settings.model_construct(
        genesys_region="nowhere",
        genesys_login_url=LOGIN_URL,
        genesys_api_url=API_URL,
        rest_budget_per_min=5,
        rest_timeout_s=3.0,
        rest_max_retries=1,
        backoff_initial_s=0.1,
    )
    login = FakeLogin()
    tr = transport(login, lambda r: json_response(200, CHANNEL_REPLY))
    rest = genesys_rest(settings, GenesysClient(client_id=CLIENT_ID, client_secret=SECRET), transport=tr)
    async with rest:
        await rest.create_channel()
    assert rest.budget.per_window == 5 and login.calls == 1
    assert SECRET not in repr(rest)


def test_region_from_settings() -> None:
    """A known region in settings gives its hosts."""
    assert genesys_config(Settings.model_construct(genesys_region="mypurecloud.de")).api_url == (
        "https://api.mypurecloud.de"
    )
