"""OAuth client credentials: cached, refreshed ahead of expiry by one task, 401 retried once, no leaks."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from bridge.errors import AuthError, RequestError, TransientError
from bridge.genesys.auth import ClientCredentialsAuth, refresh_delay

from .fakes import (
    API_URL,
    CLIENT_ID,
    LOGIN_URL,
    SECRET,
    FakeLogin,
    FakeTime,
    bearer,
    json_response,
    transport,
)


def make_auth(login: FakeLogin, time: FakeTime, api: object = None) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        CLIENT_ID,
        SECRET,
        login_url=LOGIN_URL,
        transport=transport(login, api or (lambda r: httpx.Response(200))),  # type: ignore[arg-type]
        clock=time.clock,
    )


async def test_token_request_shape() -> None:
    """POST /oauth/token with HTTP Basic client_id:secret and grant_type=client_credentials."""
    login = FakeLogin()
    auth = make_auth(login, FakeTime())
    assert await auth.token() == "tok-1"
    assert login.basic == [f"{CLIENT_ID}:{SECRET}"]
    assert login.forms == [{"grant_type": ["client_credentials"]}]


async def test_token_is_cached() -> None:
    """Repeated calls reuse the cached token."""
    login = FakeLogin()
    auth = make_auth(login, FakeTime())
    assert {await auth.token() for _ in range(5)} == {"tok-1"}
    assert login.calls == 1


@pytest.mark.parametrize(
    ("lifetime", "refresh_at"),
    [(86_400, 69_120.0), (3_600, 2_880.0), (1_000, 700.0), (300, 150.0), (172_800, 138_240.0)],
)
def test_refresh_point(lifetime: int, refresh_at: float) -> None:
    """Refresh at the earlier of 80 % of the lifetime and 5 min before expiry, never before half."""
    assert refresh_delay(lifetime) == refresh_at


async def test_refreshed_ahead_of_expiry() -> None:
    """A token is replaced once its refresh point passes, before it expires."""
    login = FakeLogin(expires_in=3_600)
    time = FakeTime()
    auth = make_auth(login, time)
    assert await auth.token() == "tok-1"
    time.now += 2_879
    assert await auth.token() == "tok-1"
    time.now += 2
    assert await auth.token() == "tok-2"
    assert login.calls == 2


async def test_single_refresh_under_concurrency() -> None:
    """Fifty concurrent callers wait for one token request and all get its token."""
    login = FakeLogin(delay_s=0.01)
    auth = make_auth(login, FakeTime())
    tokens = await asyncio.gather(*(auth.token() for _ in range(50)))
    assert set(tokens) == {"tok-1"}
    assert login.calls == 1


async def test_401_invalidates_and_retries_once() -> None:
    """A 401 from the API fetches a new token and resends the request once."""
    login = FakeLogin()
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(bearer(request))
        return httpx.Response(401 if bearer(request) == "tok-1" else 200)

    auth = make_auth(login, FakeTime())
    async with httpx.AsyncClient(transport=transport(login, api), auth=auth) as client:
        response = await client.get(f"{API_URL}/api/v2/users")
    assert response.status_code == 200
    assert seen == ["tok-1", "tok-2"]


async def test_401_twice_is_returned_not_looped() -> None:
    """A second 401 is handed back (no endless refresh loop)."""
    login = FakeLogin()
    calls: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        calls.append(bearer(request))
        return httpx.Response(401)

    auth = make_auth(login, FakeTime())
    async with httpx.AsyncClient(transport=transport(login, api), auth=auth) as client:
        response = await client.get(f"{API_URL}/api/v2/users")
    assert response.status_code == 401
    assert calls == ["tok-1", "tok-2"]


async def test_invalidate_only_the_failed_token() -> None:
    """invalidate(token) leaves a newer token alone; invalidate() drops whatever is cached."""
    login = FakeLogin()
    auth = make_auth(login, FakeTime())
    first = await auth.token()
    await auth.invalidate(first)
    second = await auth.token()
    await auth.invalidate(first)
    assert await auth.token() == second == "tok-2"
    await auth.invalidate()
    assert await auth.token() == "tok-3"


@pytest.mark.parametrize(("status", "error"), [(401, "invalid_client"), (400, "invalid_client"), (403, "x")])
async def test_bad_credentials_raise_auth_error(status: int, error: str) -> None:
    """The token endpoint refusing the credentials is an AuthError."""
    auth = make_auth(FakeLogin(status=status, error=error), FakeTime())
    with pytest.raises(AuthError) as info:
        await auth.token()
    assert info.value.status == status


async def test_token_endpoint_failures_map_to_the_tree() -> None:
    """5xx on the token endpoint is transient; other 4xx is a RequestError."""
    with pytest.raises(TransientError):
        await make_auth(FakeLogin(status=503, error="down"), FakeTime()).token()
    with pytest.raises(RequestError):
        await make_auth(FakeLogin(status=400, error="unsupported_grant_type"), FakeTime()).token()


async def test_transient_refresh_failure_keeps_a_valid_token() -> None:
    """When a refresh fails transiently but the old token is still valid, the old token is used."""
    login = FakeLogin(expires_in=3_600)
    time = FakeTime()
    auth = make_auth(login, time)
    assert await auth.token() == "tok-1"
    time.now += 3_000
    login.status = 503
    assert await auth.token() == "tok-1"
    time.now += 700
    with pytest.raises(TransientError):
        await auth.token()


async def test_transport_error_is_transient() -> None:
    """A connection failure to the login host is a TransientError."""

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    auth = ClientCredentialsAuth(
        CLIENT_ID, SECRET, login_url=LOGIN_URL, transport=httpx.MockTransport(broken)
    )
    with pytest.raises(TransientError):
        await auth.token()


async def test_token_reply_without_token_is_auth_error() -> None:
    """A 200 without access_token or expires_in is an AuthError."""
    bad = httpx.MockTransport(lambda r: json_response(200, {"token_type": "bearer"}))
    with pytest.raises(AuthError):
        await ClientCredentialsAuth(CLIENT_ID, SECRET, login_url=LOGIN_URL, transport=bad).token()


def test_sync_flow_is_refused() -> None:
    """The auth is async-only; a sync client gets a clear error."""
    auth = ClientCredentialsAuth(CLIENT_ID, SECRET, login_url=LOGIN_URL)
    mock = httpx.MockTransport(lambda r: httpx.Response(200))
    with httpx.Client(auth=auth, transport=mock) as client, pytest.raises(RuntimeError):
        client.get(API_URL)


async def test_secrets_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    """Neither the secret nor a token appears in repr, str, exceptions or DEBUG logs."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    login = FakeLogin()
    auth = make_auth(login, FakeTime(), api=lambda r: httpx.Response(401 if bearer(r) == "tok-1" else 200))
    async with httpx.AsyncClient(transport=transport(login, lambda r: httpx.Response(200)), auth=auth) as c:
        await c.get(f"{API_URL}/x")
    texts += [repr(auth), str(auth)]
    for status, error in [(401, "invalid_client"), (503, "x"), (400, "invalid_request")]:
        failing = make_auth(FakeLogin(status=status, error=error), FakeTime())
        with pytest.raises(Exception) as info:
            await failing.token()
        texts += [str(info.value), repr(info.value), repr(info.value.args), repr(failing)]
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records]
    assert caplog.records, "DEBUG logging produced nothing to check"
    for text in texts:
        assert SECRET not in text
        assert "tok-1" not in text and "tok-2" not in text
        assert CLIENT_ID + ":" not in text
