"""Genesys behaviours the official SDK documents: system messages, ChannelTopic results,
token-scoped channel listing, best-effort expands and per-endpoint rate limits."""

from __future__ import annotations

import asyncio

from tests.sim.conftest import Sim, StartSim, combined, is_change, recv_until

CHANNELS = "/api/v2/notifications/channels"


def _system(topic_type: str) -> object:
    return lambda m: m.get("topicName") == f"v2.system.{topic_type}"


async def test_no_longer_subscribed_silences_events_but_not_heartbeats(start_sim: StartSim) -> None:
    """After no_longer_subscribed the socket keeps heartbeating, delivers no change, until resubscribed."""
    sim = await start_sim(heartbeat_s=0.2)
    uid = sim.user_ids[0]
    ch = await sim.channel(topics=[combined(uid)])
    ws = await sim.connect(ch)
    r = await sim.admin("POST", "/sim/faults/system", {"type": "no_longer_subscribed", "channelId": ch["id"]})
    assert r.json() == {"channelIds": [ch["id"]]}
    msg = await recv_until(ws, _system("no_longer_subscribed"))
    body = msg["eventBody"]
    assert body["systemTopicType"] == "no_longer_subscribed"
    assert body["reason"] == "another_channel_subscribed" and body["channelId"] == ch["id"]
    await sim.admin("PUT", f"/sim/users/{uid}/routing-status", {"status": "INTERACTING"})
    heartbeat = await recv_until(ws, lambda m: True)
    assert heartbeat["eventBody"]["message"] == "WebSocket Heartbeat", "no change frame, only heartbeats"
    assert (await sim.api("GET", f"{CHANNELS}/{ch['id']}/subscriptions")).json()["entities"] == []
    await sim.api("PUT", f"{CHANNELS}/{ch['id']}/subscriptions", json=[{"id": combined(uid)}])
    await sim.admin("PUT", f"/sim/users/{uid}/routing-status", {"status": "IDLE"})
    change = await recv_until(ws, is_change)
    assert change["eventBody"]["routingStatus"]["status"] == "IDLE"


async def test_subscription_changed_drops_the_subscriptions(sim: Sim) -> None:
    """subscription_changed is announced without a reason and leaves the channel unsubscribed."""
    ch = await sim.channel(topics=[combined(sim.user_ids[0])])
    ws = await sim.connect(ch)
    await sim.admin("POST", "/sim/faults/system", {"type": "subscription_changed"})
    msg = await recv_until(ws, _system("subscription_changed"))
    assert "reason" not in msg["eventBody"]
    assert (await sim.api("GET", f"{CHANNELS}/{ch['id']}/subscriptions")).json()["entities"] == []


async def test_token_revoked_revokes_the_channels_token_and_optionally_ends_it(sim: Sim) -> None:
    """token_revoked: the creating token stops working; endChannels also closes the channel."""
    token = await sim.token()
    kept = await sim.channel(token, topics=[combined(sim.user_ids[0])])
    ws = await sim.connect(kept)
    await sim.admin("POST", "/sim/faults/system", {"type": "token_revoked", "channelId": kept["id"]})
    msg = await recv_until(ws, _system("token_revoked"))
    assert msg["eventBody"]["reason"] == "user_tokens_revoked"
    assert (await sim.api("GET", CHANNELS, token)).status_code == 401
    assert (await sim.api("HEAD", f"{CHANNELS}/{kept['id']}")).status_code == 200, "switch off: lives on"

    token = await sim.token()
    ended = await sim.channel(token)
    ws = await sim.connect(ended)
    body = {"type": "token_revoked", "channelId": ended["id"], "endChannels": True}
    await sim.admin("POST", "/sim/faults/system", body)
    await recv_until(ws, _system("token_revoked"))
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert (await sim.api("HEAD", f"{CHANNELS}/{ended['id']}")).status_code == 404


async def test_revoke_tokens_switch_ends_channels_made_with_them(start_sim: StartSim) -> None:
    """With revoke_ends_channels, revoke-tokens ends the revoked tokens' channels, not newer ones."""
    sim = await start_sim(revoke_ends_channels=True)
    old = await sim.channel(await sim.token())
    ws = await sim.connect(old)
    assert (await sim.admin("POST", "/sim/faults/revoke-tokens", {})).json()["revoked"] >= 1
    await recv_until(ws, _system("token_revoked"))
    fresh = await sim.token()
    assert (await sim.api("HEAD", f"{CHANNELS}/{old['id']}", fresh)).status_code == 404
    new = await sim.channel(fresh)
    await sim.admin("POST", "/sim/faults/revoke-tokens", {"endChannels": False})
    assert (await sim.api("HEAD", f"{CHANNELS}/{new['id']}", await sim.token())).status_code == 200


async def test_restricted_agent_topics_are_rejected_with_missing_permissions(sim: Sim) -> None:
    """A restricted agent's topic comes back Rejected with its missingPermissions; others Permitted."""
    a, b = sim.user_ids[:2]
    r = await sim.admin("POST", f"/sim/users/{b}/restrict", {"missingPermissions": ["routing:agent:view"]})
    assert r.status_code == 200
    ch = await sim.channel()
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"
    body = [{"id": combined(a)}, {"id": combined(b)}]
    assert (await sim.api("PUT", subs, json=body)).status_code == 403
    reply = (await sim.api("POST", subs, params={"ignoreErrors": "true"}, json=body)).json()["entities"]
    assert reply == [
        {"id": combined(a), "state": "Permitted"},
        {
            "id": combined(b),
            "state": "Rejected",
            "rejectionReason": "Missing permissions",
            "missingPermissions": ["routing:agent:view"],
        },
    ]
    await sim.admin("POST", f"/sim/users/{b}/restrict", {"restricted": False})
    reply = (await sim.api("POST", subs, params={"ignoreErrors": "true"}, json=body)).json()["entities"]
    assert {t["state"] for t in reply} == {"Permitted"}


async def test_post_reply_lists_the_whole_channel(sim: Sim) -> None:
    """POST adds to the channel and its reply lists every topic of the channel, not just the new ones."""
    a, b = sim.user_ids[:2]
    ch = await sim.channel(topics=[combined(a)])
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"
    reply = (await sim.api("POST", subs, json=[{"id": combined(b)}])).json()["entities"]
    assert [t["id"] for t in reply] == [combined(a), combined(b)]


async def test_channel_listing_is_per_token_unless_oauthclient(sim: Sim) -> None:
    """The default lists the calling token's channels; oauthclient shows others' without their ids."""
    first, second = await sim.token(), await sim.token()
    mine = await sim.channel(first)
    theirs = await sim.channel(second)
    listed = (await sim.api("GET", CHANNELS, first)).json()["entities"]
    assert [c["id"] for c in listed] == [mine["id"]]
    scoped = (await sim.api("GET", CHANNELS, first, params={"includechannels": "token"})).json()
    assert [c["id"] for c in scoped["entities"]] == [mine["id"]]
    every = (await sim.api("GET", CHANNELS, first, params={"includechannels": "oauthclient"})).json()
    assert len(every["entities"]) == 2
    hidden = next(c for c in every["entities"] if "id" not in c)
    assert hidden == {"expires": theirs["expires"]}
    bad = await sim.api("GET", CHANNELS, first, params={"includechannels": "everything"})
    assert bad.status_code == 400


async def test_expand_fault_drops_one_part_of_the_next_entities(sim: Sim) -> None:
    """The expand fault leaves routingStatus out of the next N expanded users only."""
    ids = ",".join(sim.user_ids[:3])
    await sim.admin("POST", "/sim/faults/expand", {"part": "routingStatus", "count": 2})
    params = {"id": ids, "expand": "presence,routingStatus"}
    users = (await sim.api("GET", "/api/v2/users", params=params)).json()["entities"]
    assert ["routingStatus" in u for u in users] == [False, False, True]
    assert all("presence" in u for u in users)
    users = (await sim.api("GET", "/api/v2/users", params=params)).json()["entities"]
    assert all("routingStatus" in u and "presence" in u for u in users)
    assert (await sim.admin("POST", "/sim/faults/expand", {"part": "email"})).status_code == 400


async def test_endpoint_allowance_in_headers_and_enforced(start_sim: StartSim) -> None:
    """An endpoint with its own allowance reports and enforces it; other endpoints keep the token's."""
    sim = await start_sim(endpoint_rate_limits={"GET /api/v2/users": 2})
    token = await sim.token()
    r = await sim.api("GET", "/api/v2/users", token)
    assert (r.headers["inin-ratelimit-allowed"], r.headers["inin-ratelimit-count"]) == ("2", "1")
    assert (await sim.api("GET", "/api/v2/users", token)).status_code == 200
    refused = await sim.api("GET", "/api/v2/users", token)
    assert refused.status_code == 429 and refused.headers["inin-ratelimit-allowed"] == "2"
    other = await sim.api("GET", "/api/v2/presence/definitions", token)
    assert other.status_code == 200 and other.headers["inin-ratelimit-allowed"] == "300"
    assert other.headers["inin-ratelimit-count"] == "3", "the refused request did not count"


async def test_users_endpoint_allowance_defaults_to_180(sim: Sim) -> None:
    """By default GET /api/v2/users has the 180 allowance seen in a Genesys trace."""
    r = await sim.api("GET", "/api/v2/users")
    assert r.headers["inin-ratelimit-allowed"] == "180"
