"""REST client over httpx.MockTransport: retries, error mapping, paging, chunking, budget, metrics."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from bridge.errors import (
    AuthError,
    GenesysError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from bridge.genesys.auth import ClientCredentialsAuth
from bridge.genesys.config import ClientConfig
from bridge.genesys.rest import GenesysRest
from bridge.metrics import REGISTRY
from bridge.model import Kind, Origin

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

OBSERVED = datetime(2024, 5, 1, 12, tzinfo=UTC)
CHANNEL_REPLY = {
    "id": "streaming-0-abc",
    "connectUri": "wss://streaming.test/channels/streaming-0-abc",
    "expires": "2024-05-02T12:00:00.000Z",
}


def requests_metric(endpoint: str, status: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "bridge_genesys_http_requests_total", {"endpoint": endpoint, "status": status}
        )
        or 0.0
    )


def rate_limited_metric() -> float:
    return REGISTRY.get_sample_value("bridge_genesys_rate_limited_total") or 0.0


def make_rest(
    api: Callable[[httpx.Request], Any],
    time: FakeTime | None = None,
    *,
    budget_per_min: int = 1000,
    max_retries: int = 3,
    login: FakeLogin | None = None,
) -> GenesysRest:
    time = time or FakeTime()
    login = login or FakeLogin()
    tr = transport(login, api)
    auth = ClientCredentialsAuth(CLIENT_ID, SECRET, login_url=LOGIN_URL, transport=tr, clock=time.clock)
    return GenesysRest(
        API_URL,
        auth=auth,
        transport=tr,
        budget_per_min=budget_per_min,
        max_retries=max_retries,
        retry_initial_s=0.5,
        retry_max_s=4.0,
        clock=time.clock,
        sleep=time.sleep,
        rng=random.Random(3),
    )


async def test_create_channel_typed_and_authorised() -> None:
    """create_channel POSTs with the bearer token and returns a typed ChannelInfo."""
    seen: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(200, {**CHANNEL_REPLY, "newField": 1})

    async with make_rest(api) as rest:
        info = await rest.create_channel()
    assert info.id == "streaming-0-abc"
    assert info.connect_uri.startswith("wss://")
    assert info.expires == datetime(2024, 5, 2, 12, tzinfo=UTC)
    assert seen[0].method == "POST" and seen[0].url.path == "/api/v2/notifications/channels"
    assert bearer(seen[0]) == "tok-1"


async def test_429_honours_retry_after() -> None:
    """429 waits exactly Retry-After (injected sleep), counts the metric, then succeeds."""
    time = FakeTime()
    replies = [
        json_response(429, {"code": "too.many.requests.retry.after"}, {"Retry-After": "7"}),
        json_response(429, {"code": "too.many.requests.retry.after"}, {"Retry-After": "2"}),
        json_response(200, CHANNEL_REPLY),
    ]
    before = rate_limited_metric()
    async with make_rest(lambda r: replies.pop(0), time) as rest:
        await rest.create_channel()
    assert time.sleeps == [7.0, 2.0]
    assert rate_limited_metric() - before == 2


async def test_429_pauses_every_caller_of_the_budget() -> None:
    """After a 429 the shared budget sends nothing before Retry-After has passed."""
    time = FakeTime()
    async with make_rest(lambda r: httpx.Response(200), time) as rest:
        rest.budget.pause_until(time.now + 30)
        await rest.delete_subscriptions("c1")
    assert sum(time.sleeps) == pytest.approx(30)


async def test_429_storm_gives_up_as_rate_limited() -> None:
    """Endless 429s end in RateLimitedError after max_retries (classified RETRY by the shard)."""
    reply = json_response(429, {"code": "too.many.requests.retry.after"}, {"Retry-After": "1"})
    async with make_rest(lambda r: reply, max_retries=2) as rest:
        with pytest.raises(RateLimitedError) as info:
            await rest.create_channel()
    assert info.value.retry_after == 1.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_5xx_retried_with_jitter_then_transient(status: int) -> None:
    """5xx (and 408) are retried max_retries times with full-jitter delays, then TransientError."""
    time = FakeTime()
    calls: list[int] = []

    def api(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status)

    async with make_rest(api, time, max_retries=4) as rest:
        with pytest.raises(TransientError) as info:
            await rest.list_channels()
    assert info.value.status == status
    assert len(calls) == 5
    assert len(time.sleeps) == 4
    for n, delay in enumerate(time.sleeps):
        assert 0 <= delay <= min(4.0, 0.5 * 2**n)


async def test_5xx_then_success() -> None:
    """A 503 followed by a 200 returns the result."""
    replies = [httpx.Response(503), json_response(200, {"entities": [CHANNEL_REPLY]})]
    async with make_rest(lambda r: replies.pop(0)) as rest:
        assert [c.id for c in await rest.list_channels()] == ["streaming-0-abc"]


async def test_transport_errors_retried_then_transient() -> None:
    """Connection errors are retried, then TransientError; counted with status 'error'."""
    before = requests_metric("/api/v2/notifications/channels", "error")

    def api(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with make_rest(api, max_retries=2) as rest:
        with pytest.raises(TransientError):
            await rest.create_channel()
    assert requests_metric("/api/v2/notifications/channels", "error") - before == 3


async def test_404_is_not_found() -> None:
    """404 maps to NotFoundError with the templated endpoint."""
    async with make_rest(lambda r: json_response(404, {"message": "channel not found"})) as rest:
        with pytest.raises(NotFoundError) as info:
            await rest.get_subscriptions("gone")
    assert info.value.endpoint == "/api/v2/notifications/channels/{id}/subscriptions"
    assert "channel not found" in str(info.value)


@pytest.mark.parametrize("status", [400, 403, 409, 422])
async def test_other_4xx_is_request_error_with_genesys_message(status: int) -> None:
    """Other 4xx → RequestError carrying Genesys's message and code, never headers or tokens."""
    reply = json_response(
        status, {"message": "Too many topics", "code": "bad.request", "status": status}, {"X-Secret": "hdr"}
    )
    async with make_rest(lambda r: reply, max_retries=5) as rest:
        with pytest.raises(RequestError) as info:
            await rest.put_subscriptions("c1", ["t"])
    text = str(info.value)
    assert "Too many topics" in text and "bad.request" in text
    assert "hdr" not in text and "tok-1" not in text and "Bearer" not in text
    assert info.value.status == status


async def test_401_after_auth_retry_is_auth_error() -> None:
    """A 401 that survives the token refresh is an AuthError."""
    login = FakeLogin()
    async with make_rest(lambda r: httpx.Response(401), login=login) as rest:
        with pytest.raises(AuthError):
            await rest.create_channel()
    assert login.calls == 2


async def test_revoked_token_recovers_transparently() -> None:
    """A revoked token (401) is replaced and the request succeeds."""
    async with make_rest(
        lambda r: httpx.Response(401) if bearer(r) == "tok-1" else json_response(200, CHANNEL_REPLY)
    ) as rest:
        assert (await rest.create_channel()).id == "streaming-0-abc"
        await rest.invalidate_token()
        await rest.create_channel()


async def test_channel_exists() -> None:
    """HEAD on a channel: 200 → True, 404 → False."""
    async with make_rest(lambda r: httpx.Response(200 if r.url.path.endswith("/live") else 404)) as rest:
        assert await rest.channel_exists("live") is True
        assert await rest.channel_exists("gone") is False


async def test_subscriptions_requests() -> None:
    """PUT/POST send [{"id": t}] (ignoreErrors when asked) and return the reported topics; GET, DELETE."""
    seen: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(200)
        return json_response(200, {"entities": [{"id": "v2.users.a?presence&routingStatus", "extra": 1}]})

    async with make_rest(api) as rest:
        put = await rest.put_subscriptions(
            "ch/1", ["v2.users.a?presence&routingStatus", "bad"], ignore_errors=True
        )
        post = await rest.post_subscriptions("ch/1", ["v2.users.a?presence&routingStatus"])
        got = await rest.get_subscriptions("ch/1")
        await rest.delete_subscriptions("ch/1")
    assert put.permitted == post.permitted == ("v2.users.a?presence&routingStatus",)
    assert got == ["v2.users.a?presence&routingStatus"]
    assert [r.method for r in seen] == ["PUT", "POST", "GET", "DELETE"]
    assert seen[0].url.raw_path.startswith(b"/api/v2/notifications/channels/ch%2F1/subscriptions")
    assert seen[0].url.params.get("ignoreErrors") == "true"
    assert "ignoreErrors" not in seen[1].url.params
    assert orjson.loads(seen[0].content) == [{"id": "v2.users.a?presence&routingStatus"}, {"id": "bad"}]


async def test_active_users_follows_pages() -> None:
    """active_users requests state=active pages until pageCount."""
    pages: list[int] = []

    def api(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["pageNumber"])
        pages.append(number)
        assert request.url.params["state"] == "active"
        assert request.url.params["pageSize"] == "2"
        users = [{"id": f"u{number}-{i}", "name": "N", "state": "active", "email": "x"} for i in range(2)]
        return json_response(200, {"entities": users, "pageNumber": number, "pageCount": 3, "total": 6})

    async with make_rest(api) as rest:
        users = await rest.active_users(page_size=2)
    assert pages == [1, 2, 3]
    assert [u.id for u in users] == ["u1-0", "u1-1", "u2-0", "u2-1", "u3-0", "u3-1"]


async def test_paging_without_page_count_stops_on_short_page() -> None:
    """Without pageCount, a short or empty page is the last."""

    def api(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["pageNumber"])
        return json_response(200, {"entities": [{"id": f"u{number}"}] * (2 if number < 3 else 1)})

    async with make_rest(api) as rest:
        assert len(await rest.active_users(page_size=2)) == 5


async def test_bulk_presences_chunks_of_50() -> None:
    """120 ids go out as 50, 50, 20 comma-joined ids; items come back typed."""
    chunks: list[list[str]] = []

    def api(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/users/presences/purecloud/bulk"
        ids = request.url.params["id"].split(",")
        chunks.append(ids)
        return json_response(
            200,
            [
                {
                    "userId": i,
                    "presenceDefinition": {"id": "d", "systemPresence": "On Queue"},
                    "message": "",
                    "modifiedDate": "2024-05-01T10:00:00Z",
                    "source": "PURECLOUD",
                    "primary": True,
                }
                for i in ids
            ],
        )

    ids = [f"u{i}" for i in range(120)]
    async with make_rest(api) as rest:
        presences = await rest.bulk_presences(ids)
    assert [len(c) for c in chunks] == [50, 50, 20]
    assert [p.user_id for p in presences] == ids
    change = presences[0].to_change(observed_at=OBSERVED)
    assert change.value.system_presence == "ON_QUEUE"  # type: ignore[union-attr]
    assert change.origin is Origin.RECONCILE and change.timestamp_known


async def test_users_with_status_chunks_of_100_and_changes() -> None:
    """250 ids go out as 100, 100, 50 with expand=presence,routingStatus; a missing part is read again
    from its own API."""
    chunks: list[int] = []
    singles: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/routingstatus"):
            singles.append(request.url.path)
            return json_response(200, {"status": "OFF_QUEUE", "startTime": "2024-05-01T08:00:00Z"})
        ids = request.url.params["id"].split(",")
        if request.url.path.endswith("/bulk"):
            singles.append(f"{request.url.path}?id={','.join(ids)}")
            presence = {
                "presenceDefinition": {"id": "d2", "systemPresence": "OnQueue"},
                "modifiedDate": "2024-05-01T08:00:00Z",
            }
            return json_response(200, [{"userId": i, **presence} for i in ids])
        chunks.append(len(ids))
        assert request.url.params["expand"] == "presence,routingStatus"
        assert request.url.params["pageSize"] == "100"
        entities: list[dict[str, Any]] = []
        for n, i in enumerate(ids):
            user: dict[str, Any] = {"id": i, "name": i, "state": "active"}
            if n % 3 != 1:
                user["presence"] = {
                    "presenceDefinition": {"id": "d1", "systemPresence": "Available"},
                    "modifiedDate": "2024-05-01T10:00:00.000Z",
                    "message": "",
                }
            if n % 3 != 2:
                user["routingStatus"] = {"status": "IDLE", "startTime": "2024-05-01T09:00:00Z"}
            entities.append(user)
        return json_response(200, {"entities": entities, "pageCount": 1, "pageNumber": 1})

    ids = [f"u{i}" for i in range(250)]
    async with make_rest(api) as rest:
        users = await rest.users_with_status(ids)
        changes = await rest.current_changes(ids[:3], observed_at=OBSERVED)
    assert chunks[:3] == [100, 100, 50]
    assert len(users) == 250
    assert users[1].presence is None and users[2].routing_status is None
    assert [(c.user_id, c.kind) for c in changes] == [
        ("u0", Kind.PRESENCE),
        ("u0", Kind.ROUTING_STATUS),
        ("u1", Kind.ROUTING_STATUS),
        ("u2", Kind.PRESENCE),
        ("u1", Kind.PRESENCE),
        ("u2", Kind.ROUTING_STATUS),
    ]
    assert singles == ["/api/v2/users/presences/purecloud/bulk?id=u1", "/api/v2/users/u2/routingstatus"]
    assert changes[4].value.system_presence == "ON_QUEUE"  # type: ignore[union-attr]
    assert changes[5].value.status == "OFF_QUEUE"  # type: ignore[union-attr]


async def test_current_changes_skips_malformed_users() -> None:
    """A user whose presence has no systemPresence is skipped, one gone meanwhile (404) too; the others
    are reconciled."""
    body = {
        "entities": [
            {"id": "bad", "presence": {"presenceDefinition": {"id": "d"}}},
            {"id": "good", "routingStatus": {"status": "IDLE"}},
        ],
        "pageCount": 1,
    }

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/bulk"):
            return json_response(200, [])
        if request.url.path.endswith("/routingstatus"):
            return json_response(404, {"message": "user not found"})
        return json_response(200, body)

    async with make_rest(api) as rest:
        changes = await rest.current_changes(["bad", "good"], observed_at=OBSERVED)
    assert [c.user_id for c in changes] == ["good"]
    assert not changes[0].timestamp_known


async def test_routing_status() -> None:
    """routing_status returns the typed status (user id filled in when absent)."""
    reply = {"status": "INTERACTING", "startTime": "2024-05-01T10:00:00.000Z"}
    async with make_rest(lambda r: json_response(200, reply)) as rest:
        status = await rest.routing_status("u1")
    assert (status.user_id, status.status) == ("u1", "INTERACTING")
    assert status.to_change(observed_at=OBSERVED).changed_at == datetime(2024, 5, 1, 10, tzinfo=UTC)


async def test_presence_definitions_normalised_with_labels() -> None:
    """Definitions: systemPresence normalised, label from en_US or the system presence."""
    body = {
        "entities": [
            {"id": "d1", "systemPresence": "Meal", "languageLabels": {"en_US": "Lunch", "fr": "Déjeuner"}},
            {"id": "d2", "systemPresence": "On Queue"},
        ],
        "pageCount": 1,
    }
    async with make_rest(lambda r: json_response(200, body)) as rest:
        defs = await rest.presence_definitions()
    assert [(d.id, d.system_presence, d.label) for d in defs] == [
        ("d1", "MEAL", "Lunch"),
        ("d2", "ON_QUEUE", "On Queue"),
    ]


async def test_unexpected_body_is_genesys_error() -> None:
    """A body that is not JSON or not the documented shape is a GenesysError, not a pydantic error."""
    async with make_rest(lambda r: httpx.Response(200, content=b"<html>")) as rest:
        with pytest.raises(GenesysError):
            await rest.create_channel()
    async with make_rest(lambda r: json_response(200, {"id": 1})) as rest:
        with pytest.raises(GenesysError):
            await rest.create_channel()


async def test_budget_never_exceeded_over_a_simulated_minute() -> None:
    """With budget 10/min, 35 concurrent requests never put more than 10 in any 60 s window."""
    time = FakeTime()
    stamps: list[float] = []

    def api(request: httpx.Request) -> httpx.Response:
        stamps.append(time.now)
        return httpx.Response(200)

    async with make_rest(api, time, budget_per_min=10) as rest:
        await asyncio.gather(*(rest.delete_subscriptions(f"c{i}") for i in range(35)))
    assert len(stamps) == 35
    for start in stamps:
        assert sum(1 for t in stamps if start <= t < start + 60) <= 10
    assert max(stamps) - min(stamps) >= 180


async def test_budget_counts_retries() -> None:
    """Retries spend budget too: 3 attempts with budget 2/min take a minute."""
    time = FakeTime()
    replies = [httpx.Response(503), httpx.Response(503), httpx.Response(200)]
    async with make_rest(lambda r: replies.pop(0), time, budget_per_min=2) as rest:
        start = time.now
        await rest.delete_subscriptions("c")
    assert time.now - start >= 60


async def test_endpoint_labels_are_templated() -> None:
    """The http requests metric uses templated endpoints, never raw ids."""
    raw_id = "raw-channel-id-4242"
    async with make_rest(lambda r: json_response(200, {"entities": []})) as rest:
        await rest.get_subscriptions(raw_id)
        await rest.channel_exists(raw_id)
    assert requests_metric("/api/v2/notifications/channels/{id}/subscriptions", "200") >= 1
    assert requests_metric("/api/v2/notifications/channels/{id}", "200") >= 1
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            assert all(raw_id not in value for value in sample.labels.values())


async def test_for_client_uses_the_config() -> None:
    """for_client builds auth + client from a ClientConfig: its base URLs and budget."""
    config = ClientConfig(
        LOGIN_URL, API_URL, budget_per_min=5, timeout_s=3.0, max_retries=1, retry_initial_s=0.1
    )
    login = FakeLogin()
    tr = transport(login, lambda r: json_response(200, CHANNEL_REPLY))
    rest = GenesysRest.for_client(CLIENT_ID, SECRET, config, transport=tr)
    async with rest:
        await rest.create_channel()
    assert rest.budget.per_window == 5 and login.calls == 1
    assert SECRET not in repr(rest)


async def test_current_changes_fills_a_missing_expansion_from_the_single_purpose_apis() -> None:
    """expand=presence,routingStatus is best effort: a missing presence comes from the bulk presence API,
    a missing routing status from the user's routingstatus endpoint, so every user is read whole."""
    paths: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        presence = {
            "presenceDefinition": {"id": "d1", "systemPresence": "Break"},
            "modifiedDate": "2024-05-01T10:00:00.000Z",
        }
        if request.url.path == "/api/v2/users":
            entities = [
                {
                    "id": "whole",
                    "presence": presence,
                    "routingStatus": {"status": "IDLE", "startTime": "2024-05-01T09:00:00Z"},
                },
                {
                    "id": "no-presence",
                    "routingStatus": {"status": "IDLE", "startTime": "2024-05-01T09:00:00Z"},
                },
                {"id": "no-routing", "presence": presence},
            ]
            return json_response(200, {"entities": entities, "pageCount": 1, "pageNumber": 1})
        if request.url.path == "/api/v2/users/presences/purecloud/bulk":
            assert request.url.params["id"] == "no-presence"
            return json_response(200, [{"userId": "no-presence", **presence}])
        assert request.url.path == "/api/v2/users/no-routing/routingstatus"
        return json_response(
            200, {"userId": "no-routing", "status": "OFF_QUEUE", "startTime": "2024-05-01T08:00:00Z"}
        )

    async with make_rest(api) as rest:
        changes = await rest.current_changes(["whole", "no-presence", "no-routing"], observed_at=OBSERVED)
    assert sorted((c.user_id, c.kind) for c in changes) == sorted(
        (u, k) for u in ("whole", "no-presence", "no-routing") for k in (Kind.PRESENCE, Kind.ROUTING_STATUS)
    )
    assert paths.count("/api/v2/users") == 1 and len(paths) == 3


async def test_subscription_reply_separates_rejected_topics() -> None:
    """ChannelTopic results: Rejected topics are not permitted; they keep reason and missing permissions."""

    def api(request: httpx.Request) -> httpx.Response:
        return json_response(
            200,
            {
                "entities": [
                    {"id": "v2.users.a?presence&routingStatus", "state": "Permitted"},
                    {"id": "v2.users.old?presence&routingStatus"},
                    {
                        "id": "v2.users.b?presence&routingStatus",
                        "state": "Rejected",
                        "rejectionReason": "Missing permissions",
                        "missingPermissions": ["directory:user:view"],
                    },
                ]
            },
        )

    async with make_rest(api) as rest:
        result = await rest.post_subscriptions(
            "c1", ["v2.users.b?presence&routingStatus"], ignore_errors=True
        )
    assert result.permitted == ("v2.users.a?presence&routingStatus", "v2.users.old?presence&routingStatus")
    assert [(r.id, r.reason, r.missing_permissions) for r in result.rejected] == [
        ("v2.users.b?presence&routingStatus", "Missing permissions", ("directory:user:view",))
    ]


async def test_channel_listing_scope_and_id_less_entries() -> None:
    """list_channels sends includechannels (token by default) and leaves out entries without an id."""
    seen: list[str | None] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params.get("includechannels"))
        return json_response(200, {"entities": [CHANNEL_REPLY, {"expires": "2024-05-02T12:00:00.000Z"}]})

    async with make_rest(api) as rest:
        token_scoped = await rest.list_channels()
        client_scoped = await rest.list_channels("oauthclient")
    assert seen == ["token", "oauthclient"]
    assert [c.id for c in token_scoped] == [c.id for c in client_scoped] == ["streaming-0-abc"]


def _limited(allowed: int, count: int, reset: int) -> dict[str, str]:
    return {
        "inin-ratelimit-allowed": str(allowed),
        "inin-ratelimit-count": str(count),
        "inin-ratelimit-reset": str(reset),
    }


async def test_endpoint_allowance_from_headers_waits_for_the_reset() -> None:
    """An endpoint whose window is spent waits for its reset; other endpoints are not held back."""
    time = FakeTime()
    calls: list[tuple[str, float]] = []

    def api(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, time.now))
        if request.url.path == "/api/v2/users":
            used = sum(1 for p, _ in calls if p == "/api/v2/users")
            return json_response(200, {"entities": [], "pageCount": 1}, _limited(2, used, 30))
        return json_response(200, {"entities": []}, _limited(300, 1, 60))

    async with make_rest(api, time) as rest:
        await rest.active_users()
        await rest.active_users()
        start = time.now
        await rest.list_channels()
        assert time.now == start, "another endpoint's allowance is its own"
        assert rest.allowances.remaining("GET /api/v2/users") == 0
        await rest.active_users()
    users_calls = [t for p, t in calls if p == "/api/v2/users"]
    assert users_calls[2] - users_calls[1] == pytest.approx(30.0)
    gauge = REGISTRY.get_sample_value(
        "bridge_genesys_rate_limit_remaining", {"endpoint": "GET /api/v2/users"}
    )
    assert gauge == 0.0


async def test_configured_ceiling_still_applies_under_a_larger_allowance() -> None:
    """Headers that allow more than the configured budget never raise it."""
    time = FakeTime()

    def api(request: httpx.Request) -> httpx.Response:
        return json_response(200, {"entities": []}, _limited(10_000, 1, 60))

    async with make_rest(api, time, budget_per_min=2) as rest:
        for _ in range(3):
            await rest.list_channels()
    assert sum(time.sleeps) == pytest.approx(60.0)


async def test_a_roster_whose_pages_disagree_with_total_is_an_error() -> None:
    """Paging that shifted (a user seen twice, another never) is not taken for the whole roster."""

    def api(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["pageNumber"])
        ids = {1: ["a", "b"], 2: ["b", "c"]}[number]  # "d" shifted out of sight
        users = [{"id": i, "name": "N", "state": "active", "email": "x"} for i in ids]
        return json_response(200, {"entities": users, "pageNumber": number, "pageCount": 2, "total": 4})

    async with make_rest(api) as rest:
        with pytest.raises(GenesysError, match="total is 4"):
            await rest.active_users(page_size=2)


# --------------------------------------------------------------------------- analytics history

HISTORY_START = datetime(2026, 12, 1, 14, tzinfo=UTC)
HISTORY_END = datetime(2026, 12, 1, 14, 10, tzinfo=UTC)


def history_page(user: str, *starts: str) -> dict[str, Any]:
    """An answer page holding one routing record per start for ``user``."""
    records = [
        {"startTime": s, "routingStatus": "IDLE" if i % 2 else "OFF_QUEUE"} for i, s in enumerate(starts)
    ]
    return {"userDetails": [{"userId": user, "routingStatus": records}], "totalHits": len(records)}


async def test_user_history_posts_the_query_and_pages_to_an_empty_page() -> None:
    """Each page is a POST of the UserDetailsQuery; a user split over pages comes back whole."""
    seen: list[dict[str, Any]] = []
    pages = [
        history_page("u-1", "2026-12-01T14:00:01.000Z"),
        history_page("u-1", "2026-12-01T14:00:02.000Z"),
        {"totalHits": 0},
    ]

    def api(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/api/v2/analytics/users/details/query")
        assert request.headers["Content-Type"] == "application/json"
        seen.append(orjson.loads(request.content))
        return json_response(200, pages.pop(0))

    before = requests_metric("/api/v2/analytics/users/details/query", "200")
    async with make_rest(api) as rest:
        history = await rest.user_history(["u-1", "u-2"], HISTORY_START, HISTORY_END)
    assert [b["paging"]["pageNumber"] for b in seen] == [1, 2, 3]
    assert seen[0]["interval"] == "2026-12-01T14:00:00.000Z/2026-12-01T14:10:00.000Z"
    assert [p["value"] for p in seen[0]["userFilters"][0]["predicates"]] == ["u-1", "u-2"]
    assert list(history) == ["u-1"]
    assert [i.start.second for i in history["u-1"].routing] == [1, 2]
    assert requests_metric("/api/v2/analytics/users/details/query", "200") - before == 3


async def test_user_history_403_is_a_request_error_with_its_status() -> None:
    """Without the analytics permission: RequestError, status 403, Genesys's code, not retried."""
    calls = 0

    def api(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return json_response(
            403, {"message": "Missing analytics:userDetail:view", "code": "missing.permissions"}
        )

    async with make_rest(api) as rest:
        with pytest.raises(RequestError) as info:
            await rest.user_history(["u-1"], HISTORY_START, HISTORY_END)
    assert info.value.status == 403
    assert "missing.permissions" in str(info.value)
    assert SECRET not in str(info.value)
    assert calls == 1


async def test_user_history_retries_429_and_5xx_and_spends_budget_on_each() -> None:
    """A 429 waits Retry-After, a 503 backs off; every attempt is one request of the budget."""
    time = FakeTime()
    replies = [
        json_response(429, {"code": "too.many.requests.retry.after"}, {"Retry-After": "3"}),
        httpx.Response(503),
        json_response(200, history_page("u-1", "2026-12-01T14:00:01.000Z")),
        json_response(200, {"totalHits": 0}),
    ]
    async with make_rest(lambda r: replies.pop(0), time, budget_per_min=100) as rest:
        history = await rest.user_history(["u-1"], HISTORY_START, HISTORY_END)
        assert rest.budget.spare() == 100 - 4
    assert 3.0 in time.sleeps
    assert len(history["u-1"].routing) == 1


async def test_user_history_5xx_storm_is_transient() -> None:
    """5xx on every attempt ends in TransientError (the caller's 'unavailable' fallback)."""
    async with make_rest(lambda r: httpx.Response(502), max_retries=1) as rest:
        with pytest.raises(TransientError):
            await rest.user_history(["u-1"], HISTORY_START, HISTORY_END)


async def test_user_history_batches_100_users_a_query() -> None:
    """150 users are two queries (100 + 50), each paged from 1."""
    seen: list[dict[str, Any]] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(orjson.loads(request.content))
        return json_response(200, {"totalHits": 0})

    users = [f"u-{i:03d}" for i in range(150)]
    async with make_rest(api) as rest:
        assert await rest.user_history(users, HISTORY_START, HISTORY_END) == {}
    assert [len(b["userFilters"][0]["predicates"]) for b in seen] == [100, 50]
    assert [b["paging"]["pageNumber"] for b in seen] == [1, 1]


async def test_user_history_malformed_page_is_a_protocol_error() -> None:
    """An answer that is not the documented shape fails the query with ProtocolError."""
    async with make_rest(lambda r: json_response(200, {"userDetails": [{"userId": 5}]})) as rest:
        with pytest.raises(ProtocolError):
            await rest.user_history(["u-1"], HISTORY_START, HISTORY_END)
