"""The streaming WebSocket: heartbeats, ping/pong, one socket per channel, frames, socket subscriptions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.sim.org import Org
from tests.sim.conftest import Sim, StartSim, combined, is_change, recv_json, recv_until

CHANNELS = "/api/v2/notifications/channels"


def _is(message: str) -> Any:
    return lambda m: m.get("eventBody", {}).get("message") == message


async def test_heartbeat_every_interval(start_sim: StartSim) -> None:
    """The server sends the channel.metadata heartbeat every heartbeat_s."""
    sim = await start_sim(heartbeat_s=0.2)
    ws = await sim.connect(await sim.channel())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(3):
        msg = await recv_json(ws, 1)
        assert msg == {"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}
    assert 0.4 <= loop.time() - t0 <= 1.5


async def test_ping_message_gets_pong(sim: Sim) -> None:
    """{"message": "ping"} is answered with the channel.metadata pong."""
    ws = await sim.connect(await sim.channel())
    await ws.send(json.dumps({"message": "ping"}))
    assert await recv_json(ws, 2) == {"topicName": "channel.metadata", "eventBody": {"message": "pong"}}


async def test_rfc6455_ping_is_answered(sim: Sim) -> None:
    """A protocol-level ping gets a protocol-level pong."""
    ws = await sim.connect(await sim.channel())
    latency = await asyncio.wait_for(await ws.ping(), 2)
    assert latency >= 0


async def test_second_socket_closes_the_first(sim: Sim) -> None:
    """One socket per channel: a new connection closes the old one, and the new one gets the frames."""
    uid = sim.user_ids[0]
    ch = await sim.channel(topics=[combined(uid)])
    first = await sim.connect(ch)
    second = await connect(ch["connectUri"])
    sim.stack.push_async_callback(second.close)
    await asyncio.wait_for(first.wait_closed(), 3)
    assert first.close_reason == "another socket connected to this channel"
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    msg = await recv_until(second, is_change)
    assert msg["topicName"] == f"v2.users.{uid}.presence"


async def test_socket_on_missing_channel_gets_404_and_close(sim: Sim) -> None:
    """Connecting to a channel that does not exist yields result 404, then a close."""
    async with connect(f"{sim.handle.ws_url}/channels/does-not-exist") as ws:
        msg = await recv_json(ws, 2)
        assert msg["result"] == "404"
        await asyncio.wait_for(ws.wait_closed(), 3)


async def test_combined_topic_expands_into_presence_and_routing_frames(sim: Sim) -> None:
    """A combined subscription yields separate presence and routingStatus frames in Genesys's shape."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[combined(uid)]))
    change = (await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "On Queue"})).json()
    presence = await recv_until(ws, is_change)
    assert presence["topicName"] == f"v2.users.{uid}.presence"
    assert presence["version"] == "2"
    body = presence["eventBody"]
    assert body["source"] == "PURECLOUD" and body["primary"] is True and body["message"] == ""
    assert body["presenceDefinition"]["systemPresence"] in ("ON_QUEUE", "On Queue")
    assert body["presenceDefinition"]["id"] == change["presenceDefinitionId"]
    assert body["modifiedDate"] == change["changedAt"]
    assert presence["metadata"]["CorrelationId"]
    await sim.admin("PUT", f"/sim/users/{uid}/routing-status", {"status": "IDLE"})
    routing = await recv_until(ws, is_change)
    assert routing["topicName"] == f"v2.users.{uid}.routingStatus"
    assert routing["eventBody"]["routingStatus"]["status"] == "IDLE"
    assert routing["eventBody"]["routingStatus"]["startTime"].endswith("Z")


async def test_plain_topic_gets_only_its_kind(sim: Sim) -> None:
    """v2.users.{id}.routingStatus does not deliver presence changes."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[f"v2.users.{uid}.routingStatus"]))
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    await sim.admin("PUT", f"/sim/users/{uid}/routing-status", {"status": "OFF_QUEUE"})
    msg = await recv_until(ws, is_change)
    assert msg["topicName"] == f"v2.users.{uid}.routingStatus"


async def test_every_subscribed_channel_gets_the_change(sim: Sim) -> None:
    """During a rotation both channels subscribed to a user receive its change."""
    uid = sim.user_ids[0]
    old = await sim.connect(await sim.channel(topics=[combined(uid)]))
    new = await sim.connect(await sim.channel(topics=[combined(uid)]))
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "BREAK"})
    a, b = await recv_until(old, is_change), await recv_until(new, is_change)
    assert a == b


async def test_subscribe_over_the_socket(sim: Sim) -> None:
    """subscribe/unsubscribe messages are answered with result 200 and take effect."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel())
    await ws.send(json.dumps({"message": "subscribe", "topics": [combined(uid)], "correlationId": "c1"}))
    reply = await recv_json(ws)
    assert reply["result"] == "200" and reply["status"] == "subscribed" and reply["correlationId"] == "c1"
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "AWAY"})
    assert (await recv_until(ws, is_change))["topicName"] == f"v2.users.{uid}.presence"
    await ws.send(json.dumps({"message": "unsubscribe", "topics": [combined(uid)], "correlationId": "c2"}))
    reply = await recv_json(ws)
    assert reply["result"] == "200" and reply["status"] == "unsubscribed"
    stats = await sim.stats()
    assert stats["channels"][0]["topics"] == 0


async def test_socket_subscribe_errors_and_limit(start_sim: StartSim) -> None:
    """Socket subscriptions obey the same limits: invalid → 400, unknown user → 403, over the limit → 400."""
    sim = await start_sim(max_topics_per_channel=2)
    a, b, c = sim.user_ids[:3]
    ws = await sim.connect(await sim.channel())
    cases = [
        (["v2.nope"], "400"),
        ([combined("ghost")], "403"),
        ([combined(a), combined(b), combined(c)], "400"),
    ]
    for topics, result in cases:
        await ws.send(json.dumps({"message": "subscribe", "topics": topics, "correlationId": "x"}))
        reply = await recv_json(ws)
        assert reply["result"] == result and reply["message"], topics
    assert (await sim.stats())["channels"][0]["topics"] == 0
    await ws.send("not json")
    assert (await recv_json(ws))["result"] == "400"


async def test_socket_subscribe_extends_the_channel(start_sim: StartSim) -> None:
    """A subscribe message extends the channel like a REST subscription."""
    sim = await start_sim(channel_ttl_s=0.6)
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel())
    for _ in range(6):
        await asyncio.sleep(0.2)
        await ws.send(json.dumps({"message": "subscribe", "topics": [combined(uid)]}))
        assert (await recv_json(ws))["result"] == "200"


async def test_change_timestamps_strictly_increase_per_user(sim: Sim) -> None:
    """Rapid changes of one user get strictly increasing modifiedDate/startTime."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[combined(uid)]))
    org = sim.handle.simulator.org
    user = org.users[uid]
    for _ in range(5):  # same millisecond, in-process
        org.set_routing_status(user, "IDLE")
        org.set_presence(user, org.primary["AVAILABLE"])
    stamps = []
    for _ in range(10):
        msg = await recv_until(ws, is_change)
        body = msg["eventBody"]
        stamps.append(body.get("modifiedDate") or body["routingStatus"]["startTime"])
    assert stamps == sorted(stamps) and len(set(stamps)) == 10


def test_same_millisecond_changes_are_bumped() -> None:
    """With a frozen clock each change of a user is 1 ms after the previous one."""
    org = Org(seed=1, event_log_max=100, clock_ms=lambda: 1_000_000)
    [uid] = org.add_users(1)
    user = org.users[uid]
    changes = [org.set_routing_status(user, "IDLE"), org.set_presence(user, org.primary["MEAL"])]
    assert [c.changed_ms for c in changes] == [1_000_001, 1_000_002]


async def test_system_presence_case_varies(start_sim: StartSim) -> None:
    """Stream frames spell systemPresence both as ON_QUEUE-style and as title case."""
    sim = await start_sim(agents=200, events_per_sec=2000, generator_paused=False)
    ws = await sim.connect(await sim.channel(topics=[combined(u) for u in sim.user_ids]))
    spellings: set[bool] = set()
    while len(spellings) < 2:
        msg = await recv_until(ws, lambda m: str(m.get("topicName", "")).endswith(".presence"))
        sp = msg["eventBody"]["presenceDefinition"]["systemPresence"]
        spellings.add(sp.isupper())


@pytest.mark.parametrize("kind", ["presence", "routingStatus"])
async def test_unsubscribed_users_send_nothing(sim: Sim, kind: str) -> None:
    """Changes of users the channel does not follow never reach the socket."""
    a, b = sim.user_ids[:2]
    ws = await sim.connect(await sim.channel(topics=[f"v2.users.{a}.{kind}"]))
    await sim.admin("PUT", f"/sim/users/{b}/presence", {"systemPresence": "MEAL"})
    await sim.admin("PUT", f"/sim/users/{b}/routing-status", {"status": "IDLE"})
    await sim.admin("PUT", f"/sim/users/{a}/presence", {"systemPresence": "MEAL"})
    await sim.admin("PUT", f"/sim/users/{a}/routing-status", {"status": "IDLE"})
    msg = await recv_until(ws, is_change)
    assert msg["topicName"] == f"v2.users.{a}.{kind}"
    with pytest.raises((TimeoutError, ConnectionClosed)):
        await recv_until(ws, is_change, timeout=0.3)
