"""Notification channels and subscriptions over REST: limits, errors, expiry, eviction."""

from __future__ import annotations

import asyncio
import time

from websockets.exceptions import ConnectionClosed

from tests.sim.conftest import Sim, StartSim, combined, eventually, recv_until

CHANNELS = "/api/v2/notifications/channels"


async def test_create_channel_returns_id_connect_uri_and_expires(sim: Sim) -> None:
    """POST channels → id, ws connectUri on this host and an ISO expiry; GET lists it."""
    ch = await sim.channel()
    assert ch["connectUri"] == f"{sim.handle.ws_url}/channels/{ch['id']}"
    assert ch["expires"].endswith("Z")
    listed = (await sim.api("GET", CHANNELS)).json()["entities"]
    assert [c["id"] for c in listed] == [ch["id"]]


async def test_head_is_200_for_live_channel_and_404_otherwise(sim: Sim) -> None:
    """HEAD answers 200 for the caller's channel, 404 for unknown or other clients' channels."""
    ch = await sim.channel()
    assert (await sim.api("HEAD", f"{CHANNELS}/{ch['id']}")).status_code == 200
    assert (await sim.api("HEAD", f"{CHANNELS}/nope")).status_code == 404


async def test_other_clients_channels_are_invisible(start_sim: StartSim) -> None:
    """A channel belongs to its OAuth client: others get 404 and do not list it."""
    sim = await start_sim(clients={"a": "1", "b": "2"})
    ta, tb = await sim.token("a", "1"), await sim.token("b", "2")
    ch = await sim.channel(ta)
    assert (await sim.api("HEAD", f"{CHANNELS}/{ch['id']}", tb)).status_code == 404
    assert (await sim.api("GET", f"{CHANNELS}/{ch['id']}/subscriptions", tb)).status_code == 404
    assert (await sim.api("GET", CHANNELS, tb)).json()["entities"] == []


async def test_subscriptions_put_post_get_delete(sim: Sim) -> None:
    """PUT replaces, POST adds, GET lists, DELETE removes all."""
    a, b, c = sim.user_ids[:3]
    ch = await sim.channel()
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"
    r = await sim.api("PUT", subs, json=[{"id": combined(a)}, {"id": f"v2.users.{b}.presence"}])
    assert [t["id"] for t in r.json()["entities"]] == [combined(a), f"v2.users.{b}.presence"]
    await sim.api("POST", subs, json=[{"id": f"v2.users.{c}.routingStatus"}])
    listed = [t["id"] for t in (await sim.api("GET", subs)).json()["entities"]]
    assert listed == [combined(a), f"v2.users.{b}.presence", f"v2.users.{c}.routingStatus"]
    r = await sim.api("PUT", subs, json=[{"id": combined(c)}])
    assert [t["id"] for t in r.json()["entities"]] == [combined(c)]
    assert (await sim.api("DELETE", subs)).status_code == 200
    assert (await sim.api("GET", subs)).json()["entities"] == []


async def test_more_than_1000_topics_is_400_and_changes_nothing(start_sim: StartSim) -> None:
    """1,000 combined topics fit; 1,001 (by PUT or by POST on top) is 400 and nothing is applied."""
    sim = await start_sim(agents=1001)
    ids = sim.user_ids
    ch = await sim.channel()
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"
    assert (await sim.api("PUT", subs, json=[{"id": combined(u)} for u in ids[:1000]])).status_code == 200
    r = await sim.api("POST", subs, json=[{"id": combined(ids[1000])}])
    assert r.status_code == 400 and r.json()["code"] == "bad.request"
    r = await sim.api("PUT", subs, json=[{"id": combined(u)} for u in ids])
    assert r.status_code == 400
    assert len((await sim.api("GET", subs)).json()["entities"]) == 1000


async def test_invalid_topics_are_400_unless_ignore_errors(sim: Sim) -> None:
    """Malformed topics fail the request (400); ignoreErrors=true skips them."""
    a = sim.user_ids[0]
    ch = await sim.channel()
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"
    for bad in (
        "v2.users.x.conversations",
        f"v2.users.{a}?presence&bogus",
        "v2.routing.queues.q",
        "v2.users." + "a" * 200,
    ):
        r = await sim.api("PUT", subs, json=[{"id": combined(a)}, {"id": bad}])
        assert r.status_code == 400, bad
    assert (await sim.api("GET", subs)).json()["entities"] == []
    r = await sim.api(
        "PUT", subs, params={"ignoreErrors": "true"}, json=[{"id": combined(a)}, {"id": "v2.nope"}]
    )
    assert r.status_code == 200
    assert r.json()["entities"] == [
        {"id": combined(a), "state": "Permitted"},
        {"id": "v2.nope", "state": "Rejected", "rejectionReason": "Invalid topic", "missingPermissions": []},
    ]
    assert [t["id"] for t in (await sim.api("GET", subs)).json()["entities"]] == [combined(a)]


async def test_unknown_user_topic_is_403_unless_ignore_errors(sim: Sim) -> None:
    """A well-formed topic for an unknown user is forbidden; ignoreErrors reports it Rejected."""
    a = sim.user_ids[0]
    ch = await sim.channel()
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"
    r = await sim.api("PUT", subs, json=[{"id": combined(a)}, {"id": combined("unknown-user")}])
    assert r.status_code == 403
    r = await sim.api(
        "PUT",
        subs,
        params={"ignoreErrors": "true"},
        json=[{"id": combined("unknown-user")}, {"id": combined(a)}],
    )
    states = {t["id"]: t["state"] for t in r.json()["entities"]}
    assert states == {combined(a): "Permitted", combined("unknown-user"): "Rejected"}
    assert [t["id"] for t in (await sim.api("GET", subs)).json()["entities"]] == [combined(a)]


async def test_21st_channel_evicts_least_recently_used_unconnected_first(sim: Sim) -> None:
    """The 21st channel evicts the LRU channel without a socket, even if a connected one is older."""
    first = await sim.channel()
    ws = await sim.connect(first)  # oldest, but connected
    others = [await sim.channel() for _ in range(19)]
    newest = await sim.channel()
    assert (await sim.api("HEAD", f"{CHANNELS}/{others[0]['id']}")).status_code == 404
    assert (await sim.api("HEAD", f"{CHANNELS}/{first['id']}")).status_code == 200
    assert (await sim.api("HEAD", f"{CHANNELS}/{newest['id']}")).status_code == 200
    assert len((await sim.api("GET", CHANNELS)).json()["entities"]) == 20
    await ws.close()


async def test_eviction_of_connected_channel_closes_its_socket(start_sim: StartSim) -> None:
    """When every channel has a socket, the LRU one is evicted and its socket closed."""
    sim = await start_sim(max_channels_per_client=2)
    a, b = await sim.channel(), await sim.channel()
    ws_a = await sim.connect(a)
    await sim.connect(b)
    await sim.channel()
    try:
        await recv_until(ws_a, lambda m: False, timeout=3)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None and "evicted" in exc.rcvd.reason
    assert (await sim.api("HEAD", f"{CHANNELS}/{a['id']}")).status_code == 404


async def test_channel_expires_and_its_socket_is_closed(start_sim: StartSim) -> None:
    """At expiry HEAD turns 404 and the socket is closed by the server."""
    sim = await start_sim(channel_ttl_s=0.5)
    ch = await sim.channel()
    ws = await sim.connect(ch)
    await asyncio.wait_for(ws.wait_closed(), 3)
    assert ws.close_reason == "channel expired"
    assert (await sim.api("HEAD", f"{CHANNELS}/{ch['id']}")).status_code == 404


async def test_resubscribing_extends_the_channel(start_sim: StartSim) -> None:
    """A PUT of the subscriptions pushes expires forward and keeps the channel alive past its first expiry."""
    sim = await start_sim(channel_ttl_s=0.6)
    a = sim.user_ids[0]
    ch = await sim.channel()
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"
    end = time.monotonic() + 1.5
    expires = [ch["expires"]]
    while time.monotonic() < end:
        await asyncio.sleep(0.2)
        assert (await sim.api("PUT", subs, json=[{"id": combined(a)}])).status_code == 200
        expires.append((await sim.api("GET", CHANNELS)).json()["entities"][0]["expires"])
    assert (await sim.api("HEAD", f"{CHANNELS}/{ch['id']}")).status_code == 200
    assert expires == sorted(expires) and expires[-1] > expires[0]


async def test_without_extension_channel_closes_regardless(start_sim: StartSim) -> None:
    """With extend_on_subscribe off, re-subscribing does not save the channel."""
    sim = await start_sim(channel_ttl_s=0.6, extend_on_subscribe=False)
    a = sim.user_ids[0]
    ch = await sim.channel()
    subs = f"{CHANNELS}/{ch['id']}/subscriptions"

    async def gone() -> bool:
        await sim.api("PUT", subs, json=[{"id": combined(a)}])
        return (await sim.api("HEAD", f"{CHANNELS}/{ch['id']}")).status_code == 404

    await eventually(gone, 3)
    assert (await sim.api("PUT", subs, json=[{"id": combined(a)}])).status_code == 404
