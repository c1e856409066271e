"""The official Genesys SDK (PureCloudPlatformClientV2) as a client of the simulator: its models
must deserialize what the simulator sends, enums included (an unknown enum value becomes
"outdated_sdk_version" in the SDK instead of failing, so every enum is compared explicitly).

The SDK is synchronous (urllib3): its calls run in a thread while the simulator serves on the
test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from PureCloudPlatformClientV2.api_client import ApiClient
from PureCloudPlatformClientV2.apis.analytics_api import AnalyticsApi
from PureCloudPlatformClientV2.apis.notifications_api import NotificationsApi
from PureCloudPlatformClientV2.apis.presence_api import PresenceApi
from PureCloudPlatformClientV2.apis.users_api import UsersApi
from PureCloudPlatformClientV2.models.channel_topic import ChannelTopic
from PureCloudPlatformClientV2.models.paging_spec import PagingSpec
from PureCloudPlatformClientV2.models.user_detail_query_filter import UserDetailQueryFilter
from PureCloudPlatformClientV2.models.user_detail_query_predicate import UserDetailQueryPredicate
from PureCloudPlatformClientV2.models.user_details_query import UserDetailsQuery

from bridge.sim.org import ROUTING_STATUSES, SYSTEM_PRESENCES, iso_ms, wall_ms
from tests.sim.conftest import Sim, StartSim, combined, recv_until

T = TypeVar("T")
OUTDATED = "outdated_sdk_version"


@pytest.fixture
async def sdk(sim: Sim) -> ApiClient:
    """An SDK ApiClient pointed at the simulator with a fresh token."""
    client = ApiClient(host=sim.handle.base_url)
    client.access_token = await sim.token()
    return client


def _topic(name: str) -> ChannelTopic:
    topic = ChannelTopic()
    topic.id = name
    return topic


async def call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(func, *args, **kwargs)


async def test_channel_topic_results_deserialize(sim: Sim, sdk: ApiClient) -> None:
    """put_notifications_channel_subscriptions(ignore_errors=True): Permitted and Rejected ChannelTopics."""
    a, b = sim.user_ids[:2]
    await sim.admin("POST", f"/sim/users/{b}/restrict", {"missingPermissions": ["directory:user:view"]})
    api = NotificationsApi(sdk)
    channel = await call(api.post_notifications_channels)
    assert channel.id and channel.connect_uri and channel.expires is not None
    body = [_topic(combined(a)), _topic(combined(b))]
    listing = await call(api.put_notifications_channel_subscriptions, channel.id, body, ignore_errors=True)
    by_id = {t.id: t for t in listing.entities}
    assert by_id[combined(a)].state == "Permitted"
    rejected = by_id[combined(b)]
    assert (rejected.state, rejected.rejection_reason) == ("Rejected", "Missing permissions")
    assert rejected.missing_permissions == ["directory:user:view"]
    subscribed = await call(api.get_notifications_channel_subscriptions, channel.id)
    assert [t.id for t in subscribed.entities] == [combined(a)]


async def test_channel_listing_scope_deserializes(sim: Sim, sdk: ApiClient) -> None:
    """get_notifications_channels: token scope lists one channel; oauthclient adds another token's sans id."""
    api = NotificationsApi(sdk)
    mine = await call(api.post_notifications_channels)
    await sim.channel(await sim.token())  # made with another token of the same client
    scoped = await call(api.get_notifications_channels)
    assert [c.id for c in scoped.entities] == [mine.id]
    every = await call(api.get_notifications_channels, includechannels="oauthclient")
    assert sorted(str(c.id) for c in every.entities) == sorted([mine.id, "None"])
    assert all(c.expires is not None for c in every.entities)


async def test_presence_definitions_and_users_deserialize(sim: Sim, sdk: ApiClient) -> None:
    """OrganizationPresenceDefinition enums (OnQueue…), users with a dropped expand, routing status."""
    definitions = await call(PresenceApi(sdk).get_presence_definitions)
    spellings = {d.system_presence for d in definitions.entities}
    assert OUTDATED not in spellings and "OnQueue" in spellings
    assert {d.type for d in definitions.entities} == {"System", "User"}
    users_api = UsersApi(sdk)
    ids = sim.user_ids[:2]
    await sim.admin("POST", "/sim/faults/expand", {"part": "presence", "count": 1})
    users = await call(users_api.get_users, id=ids, expand=["presence", "routingStatus"])
    assert [u.presence is None for u in users.entities] == [True, False]
    assert all(u.routing_status.status != OUTDATED for u in users.entities)
    status = await call(users_api.get_user_routingstatus, ids[0])
    assert status.status in ("OFF_QUEUE", "IDLE", "INTERACTING", "NOT_RESPONDING", "COMMUNICATING")


class _Reply:
    """The piece of a urllib3 response ApiClient.deserialize reads."""

    def __init__(self, data: str) -> None:
        self.data = data

    def getheader(self, _name: str) -> str:
        return "application/json"


@pytest.mark.parametrize("topic_type", ["no_longer_subscribed", "subscription_changed", "token_revoked"])
async def test_system_messages_deserialize(sim: Sim, sdk: ApiClient, topic_type: str) -> None:
    """A system message's eventBody is a valid SystemMessageSystemMessage, enums included."""
    ch = await sim.channel()
    ws = await sim.connect(ch)
    await sim.admin("POST", "/sim/faults/system", {"type": topic_type, "channelId": ch["id"]})
    frame = await recv_until(ws, lambda m: m.get("topicName") == f"v2.system.{topic_type}")
    message = sdk.deserialize(_Reply(json.dumps(frame["eventBody"])), "SystemMessageSystemMessage")
    assert (message.system_topic_type, message.channel_id) == (topic_type, ch["id"])
    assert message.reason in (None, "another_channel_subscribed", "user_tokens_revoked")


def _details_query(user_ids: list[str], start_ms: int, end_ms: int) -> UserDetailsQuery:
    """The query as the SDK's own models build and serialize it."""
    predicates = []
    for uid in user_ids:
        predicate = UserDetailQueryPredicate()
        predicate.type, predicate.dimension, predicate.operator, predicate.value = (
            "dimension",
            "userId",
            "matches",
            uid,
        )
        predicates.append(predicate)
    user_filter = UserDetailQueryFilter()
    user_filter.type, user_filter.predicates = "or", predicates
    paging = PagingSpec()
    paging.page_size, paging.page_number = 100, 1
    query = UserDetailsQuery()
    query.interval, query.order = f"{iso_ms(start_ms)}/{iso_ms(end_ms)}", "asc"
    query.user_filters, query.paging = [user_filter], paging
    return query


async def test_user_details_query_deserializes_every_enum(start_sim: StartSim) -> None:
    """post_analytics_users_details_query: every systemPresence and routingStatus the simulator can
    send arrives as the SDK's own enum value (none "outdated_sdk_version"), with datetimes and ids."""
    sim = await start_sim(analytics_delay_s=0)
    uid = sim.user_ids[0]
    start = wall_ms() - 3_600_000  # before the agents' initial states
    for system_presence in SYSTEM_PRESENCES:
        await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": system_presence})
    for status in ROUTING_STATUSES:
        await sim.admin("PUT", f"/sim/users/{uid}/routing-status", {"status": status})
    client = ApiClient(host=sim.handle.base_url)
    client.access_token = await sim.token()
    api = AnalyticsApi(client)
    answer = await call(api.post_analytics_users_details_query, _details_query([uid], start, wall_ms() + 1))
    (detail,) = answer.user_details
    assert detail.user_id == uid and answer.total_hits == len(detail.primary_presence) + len(
        detail.routing_status
    )
    presences = [p.system_presence for p in detail.primary_presence]
    statuses = [r.routing_status for r in detail.routing_status]
    assert OUTDATED not in presences and OUTDATED not in statuses
    assert set(presences) == set(SYSTEM_PRESENCES) and set(statuses) == set(ROUTING_STATUSES)
    definitions = sim.handle.simulator.org.definitions_by_id
    assert all(
        definitions[p.organization_presence_id].system_presence == p.system_presence
        for p in detail.primary_presence
    )
    records = [*detail.primary_presence, *detail.routing_status]
    assert all(r.start_time.tzinfo is not None for r in records)
    assert [r.end_time is None for r in detail.primary_presence] == [False] * (len(presences) - 1) + [True]
    raw = await sim.api(
        "POST",
        "/api/v2/analytics/users/details/query",
        json=client.sanitize_for_serialization(_details_query(["nobody"], start, wall_ms())),
    )
    empty = client.deserialize(_Reply(raw.text), "AnalyticsUserDetailsQueryResponse")
    assert (empty.total_hits, empty.user_details) == (0, None)


def test_the_bridge_knows_every_region_of_the_sdk() -> None:
    """REGION_DOMAINS is exactly the SDK's PureCloudRegionHosts, "https://api." stripped."""
    from PureCloudPlatformClientV2.purecloud_region_hosts import PureCloudRegionHosts

    from bridge.genesys.regions import REGION_DOMAINS

    sdk_domains = {h.value.removeprefix("https://api.") for h in PureCloudRegionHosts}
    assert set(REGION_DOMAINS) == sdk_domains
