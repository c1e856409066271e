"""The REST client and socket shell against the real simulator (bridge.sim), over real HTTP and WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bridge.errors import ChannelClosedError, NotFoundError, RequestError
from bridge.genesys import history, protocol
from bridge.genesys.auth import ClientCredentialsAuth
from bridge.genesys.rest import GenesysRest
from bridge.genesys.socket import NotificationSocket
from bridge.model import Kind, Origin, PresenceValue, RoutingValue
from bridge.sim.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SimConfig
from bridge.sim.org import wall_ms
from bridge.sim.server import SimHandle, run_simulator

RECV_TIMEOUT_S = 5.0


@dataclass
class Env:
    handle: SimHandle
    rest: GenesysRest
    admin: httpx.AsyncClient
    sleeps: list[float] = field(default_factory=list)

    @property
    def users(self) -> list[str]:
        return list(self.handle.simulator.org.users)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    config = SimConfig(port=0, agents=30, seed=11, generator_paused=True, heartbeat_s=0.3)
    async with contextlib.AsyncExitStack() as stack:
        handle = await stack.enter_async_context(run_simulator(config))
        sleeps: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)
            await asyncio.sleep(delay)

        auth = ClientCredentialsAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, login_url=handle.base_url)
        rest = GenesysRest(handle.base_url, auth=auth, sleep=sleep, max_retries=4, retry_initial_s=0.05)
        await stack.enter_async_context(rest)
        admin = await stack.enter_async_context(httpx.AsyncClient(base_url=handle.base_url, timeout=10))
        yield Env(handle, rest, admin, sleeps)


def now() -> datetime:
    return datetime.now(UTC)


async def next_message(sock: NotificationSocket, kind: type[Any]) -> Any:
    """Skip frames until one parses as ``kind``."""
    async with asyncio.timeout(RECV_TIMEOUT_S):
        while True:
            msg = protocol.parse_frame(await sock.recv(), observed_at=now(), received_at=0.0)
            if isinstance(msg, kind):
                return msg


async def test_channel_subscribe_and_receive_presence(env: Env) -> None:
    """Token, channel, PUT subscriptions, socket; a presence set via the admin API arrives as a Change."""
    user = env.users[0]
    channel = await env.rest.create_channel()
    assert channel.expires > now()
    result = await env.rest.put_subscriptions(channel.id, [protocol.user_topic(user)])
    assert result.permitted == (protocol.user_topic(user),) and result.rejected == ()
    assert await env.rest.get_subscriptions(channel.id) == list(result.permitted)
    sock = NotificationSocket()
    await sock.connect(channel.connect_uri)
    try:
        await asyncio.sleep(0.1)
        r = await env.admin.put(f"/sim/users/{user}/presence", json={"systemPresence": "On Queue"})
        assert r.status_code == 200, r.text
        event = await next_message(sock, protocol.EventMessage)
        change = event.change
        assert (change.user_id, change.kind) == (user, Kind.PRESENCE)
        assert change.value.system_presence == "ON_QUEUE"
        assert change.timestamp_known and change.correlation_id
        r = await env.admin.put(f"/sim/users/{user}/routing-status", json={"status": "INTERACTING"})
        assert r.status_code == 200, r.text
        routing = (await next_message(sock, protocol.EventMessage)).change
        assert (routing.kind, routing.value.status) == (Kind.ROUTING_STATUS, "INTERACTING")
        # The stream and the REST reconciliation agree on the same change's id.
        current = await env.rest.current_changes([user], observed_at=now())
        assert {c.event_id for c in current} == {change.event_id, routing.event_id}
    finally:
        await sock.close()


async def test_heartbeat_ping_pong_and_maintenance(env: Env) -> None:
    """Heartbeats arrive, our ping gets a pong, and maintenance announces socket_closing then closes."""
    channel = await env.rest.create_channel()
    sock = NotificationSocket()
    await sock.connect(channel.connect_uri)
    try:
        await next_message(sock, protocol.Heartbeat)
        await sock.send(protocol.ping_frame())
        await next_message(sock, protocol.Pong)
        r = await env.admin.post(
            "/sim/faults/maintenance", json={"channelId": channel.id, "graceSeconds": 0.2}
        )
        assert r.status_code == 200, r.text
        await next_message(sock, protocol.SocketClosing)
        with pytest.raises(ChannelClosedError):
            await next_message(sock, protocol.UnknownTopic)
        assert sock.closed
    finally:
        await sock.close()


async def test_socket_subscribe_reply(env: Env) -> None:
    """A socket-side subscribe is answered with a SubscriptionReply."""
    channel = await env.rest.create_channel()
    sock = NotificationSocket()
    await sock.connect(channel.connect_uri)
    try:
        await sock.send(protocol.subscribe_frame([protocol.user_topic(env.users[1])], "corr-1"))
        reply = await next_message(sock, protocol.SubscriptionReply)
        assert reply.ok
    finally:
        await sock.close()


async def test_bulk_presence_paging_and_definitions(env: Env) -> None:
    """Roster paging, bulk presence, users with status, routing status and definitions all parse."""
    users = await env.rest.active_users(page_size=7)
    assert sorted(u.id for u in users) == sorted(env.users)
    ids = [u.id for u in users]
    presences = await env.rest.bulk_presences(ids)
    assert sorted(p.user_id or "" for p in presences) == sorted(ids)
    changes = [p.to_change(observed_at=now()) for p in presences]
    assert all(c.origin is Origin.RECONCILE for c in changes)
    with_status = await env.rest.users_with_status(ids)
    assert len(with_status) == len(ids)
    routing = await env.rest.routing_status(ids[0])
    assert routing.status
    definitions = await env.rest.presence_definitions()
    assert {"AVAILABLE", "ON_QUEUE", "OFFLINE"} <= {d.system_presence for d in definitions}


async def test_channel_gone_and_eviction(env: Env) -> None:
    """HEAD says a channel exists until evicted by a 21st; its subscriptions are then NotFound."""
    first = await env.rest.create_channel()
    assert await env.rest.channel_exists(first.id)
    for _ in range(20):
        await env.rest.create_channel()
    assert not await env.rest.channel_exists(first.id)
    with pytest.raises(NotFoundError):
        await env.rest.get_subscriptions(first.id)
    assert len(await env.rest.list_channels()) == 20


async def test_revoked_token_and_http_faults_recovered(env: Env) -> None:
    """Revoked tokens are replaced transparently; injected 503s and 429s are retried."""
    await env.rest.create_channel()
    await env.admin.post("/sim/faults/revoke-tokens", json={})
    await env.rest.create_channel()
    await env.admin.post("/sim/faults/http", json={"status": 503, "count": 2, "pathPrefix": "/api/v2"})
    await env.rest.list_channels()
    await env.admin.post("/sim/faults/http", json={"status": 429, "count": 1, "pathPrefix": "/api/v2"})
    await env.rest.list_channels()
    assert env.sleeps[-1] == 1.0  # the simulator's Retry-After
    assert len(env.sleeps) == 3


async def test_expand_gaps_are_filled_from_the_single_purpose_endpoints(env: Env) -> None:
    """An expand that drops a part: current_changes still returns both parts of every user (missing
    presences from the bulk presence API, missing routing statuses from the user's endpoint)."""
    users = env.users[:5]
    await env.admin.post("/sim/faults/expand", json={"part": "routingStatus", "count": 2})
    await env.admin.post("/sim/faults/expand", json={"part": "presence", "count": 1})
    changes = await env.rest.current_changes(users, observed_at=now())
    assert {(c.user_id, c.kind) for c in changes} == {(u, k) for u in users for k in Kind}
    requests = (await env.admin.get("/sim/stats")).json()["requests"]
    assert requests["GET /api/v2/users/{user_id}/routingstatus"] == {"200": 2}
    assert requests["GET /api/v2/users/presences/purecloud/bulk"] == {"200": 1}


async def test_rejected_topics_and_token_scoped_listing(env: Env) -> None:
    """A restricted agent's topic comes back rejected; the listing shows the channels of this token."""
    a, b = env.users[:2]
    await env.admin.post(f"/sim/users/{b}/restrict", json={})
    channel = await env.rest.create_channel()
    result = await env.rest.put_subscriptions(
        channel.id, [protocol.user_topic(a), protocol.user_topic(b)], ignore_errors=True
    )
    assert result.permitted == (protocol.user_topic(a),)
    assert [(r.id, r.missing_permissions) for r in result.rejected] == [
        (protocol.user_topic(b), ("directory:user:view",))
    ]
    await env.rest.invalidate_token()  # the next call uses a new token
    assert await env.rest.list_channels() == []
    assert await env.rest.list_channels("oauthclient") == [], "another token's channel has no id"
    assert await env.rest.channel_exists(channel.id)


async def test_endpoint_allowance_is_followed_without_429s() -> None:
    """With 2 requests per 1 s window on GET /users, a third waits for the reset instead of a 429."""
    config = SimConfig(
        port=0,
        agents=5,
        seed=2,
        generator_paused=True,
        rate_limit_window_s=1.0,
        endpoint_rate_limits={"GET /api/v2/users": 2},
    )
    async with run_simulator(config) as handle:
        auth = ClientCredentialsAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, login_url=handle.base_url)
        async with GenesysRest(handle.base_url, auth=auth) as rest:
            started = asyncio.get_running_loop().time()
            for _ in range(3):
                assert len(await rest.active_users()) == 5
            waited = asyncio.get_running_loop().time() - started
        statuses = handle.simulator.stats()["requests"]["GET /api/v2/users"]  # type: ignore[index]
    assert statuses == {"200": 3} and waited >= 0.5


async def test_user_history_matches_the_stream_after_the_analytics_delay() -> None:
    """The analytics history, once past the delay, yields the stream's changes with the stream's ids."""
    offset_ms = [0]
    config = SimConfig(port=0, agents=5, seed=12, generator_paused=True, heartbeat_s=0.3)
    async with contextlib.AsyncExitStack() as stack:
        handle = await stack.enter_async_context(run_simulator(config, lambda: wall_ms() + offset_ms[0]))
        auth = ClientCredentialsAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, login_url=handle.base_url)
        rest = await stack.enter_async_context(GenesysRest(handle.base_url, auth=auth, retry_initial_s=0.05))
        admin = await stack.enter_async_context(httpx.AsyncClient(base_url=handle.base_url, timeout=10))
        user = next(iter(handle.simulator.org.users))
        channel = await rest.create_channel()
        await rest.put_subscriptions(channel.id, [protocol.user_topic(user)])
        sock = NotificationSocket()
        await sock.connect(channel.connect_uri)
        stack.push_async_callback(sock.close)
        start = now() - timedelta(minutes=1)
        await asyncio.sleep(0.1)
        current = {c.kind: c.value for c in await rest.current_changes([user], observed_at=now())}
        presence = current[Kind.PRESENCE]
        assert isinstance(presence, PresenceValue) and presence.system_presence == "OFFLINE"
        assert current[Kind.ROUTING_STATUS] == RoutingValue("OFF_QUEUE")
        # So both are real transitions (a same-value PUT starts no analytics record); no message in history.
        await admin.put(f"/sim/users/{user}/presence", json={"systemPresence": "On Queue", "message": "hi"})
        await admin.put(f"/sim/users/{user}/routing-status", json={"status": "IDLE"})
        streamed = [(await next_message(sock, protocol.EventMessage)).change for _ in range(2)]
        # Genesys returns records that overlap the interval strictly (start < its end): a change in the
        # interval's last millisecond would be left out, so the interval ends after the last change.
        end = max(c.changed_at for c in streamed) + timedelta(seconds=1)

        before_delay = await rest.user_history([user], start, end)
        seen_early = {
            c.event_id for h in before_delay.values() for c in history.changes(h, observed_at=now())
        }
        assert not seen_early & {c.event_id for c in streamed}, (
            "changes younger than the delay are not served"
        )

        offset_ms[0] += round((config.analytics_delay_s + 1) * 1000)
        result = await rest.user_history([user, "no-such-user"], start, end)
        assert list(result) == [user]
        backfilled = history.changes(result[user], observed_at=now())
        by_id = {c.event_id: c for c in backfilled}
        for change in streamed:
            assert change.event_id in by_id, f"{change.kind} {change.changed_at} not in the history"
            assert by_id[change.event_id].changed_at == change.changed_at
            assert by_id[change.event_id].origin is Origin.BACKFILL
        assert result[user].presence[-1].end is None  # the current record is open


async def test_user_history_without_the_analytics_permission_is_a_403(env: Env) -> None:
    """The simulator's analytics fault: RequestError 403, other calls unaffected."""
    r = await env.admin.post("/sim/faults/analytics", json={"forbidden": True})
    assert r.status_code == 200, r.text
    with pytest.raises(RequestError) as info:
        await env.rest.user_history(env.users[:3], now() - timedelta(minutes=5), now())
    assert info.value.status == 403
    assert await env.rest.channel_exists((await env.rest.create_channel()).id)
    await env.admin.post("/sim/faults/analytics", json={"forbidden": False})
    assert isinstance(await env.rest.user_history(env.users[:3], now() - timedelta(minutes=5), now()), dict)
