"""Fault injection through /sim/faults/*: drop, stall, maintenance, expire, HTTP and frame faults."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

from tests.sim.conftest import Sim, StartSim, combined, eventually, is_change, recv_json, recv_until

CHANNELS = "/api/v2/notifications/channels"


async def test_drop_cuts_tcp_without_close_frame(sim: Sim) -> None:
    """drop aborts the connection: the client sees no close frame; the channel survives for a reconnect."""
    ch = await sim.channel()
    ws = await sim.connect(ch)
    r = await sim.admin("POST", "/sim/faults/drop", {"channelId": ch["id"]})
    assert r.json()["channelIds"] == [ch["id"]]
    with pytest.raises(ConnectionClosed) as exc:
        await recv_json(ws, 3)
    assert exc.value.rcvd is None
    assert (await sim.api("HEAD", f"{CHANNELS}/{ch['id']}")).status_code == 200


async def test_stall_sends_nothing_and_loses_changes(start_sim: StartSim) -> None:
    """A stall sends nothing (heartbeat, pong, change); afterwards frames flow, the lost one is gone."""
    sim = await start_sim(heartbeat_s=0.1)
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[combined(uid)]))
    await recv_json(ws, 2)  # a heartbeat: the socket is live
    await sim.admin("POST", "/sim/faults/stall", {"seconds": 1.5})
    await asyncio.sleep(0.05)
    while True:  # drain what was in flight before the stall
        try:
            await recv_json(ws, 0.05)
        except TimeoutError:
            break
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    await ws.send(json.dumps({"message": "ping"}))
    pong_waiter = await ws.ping()
    with pytest.raises(TimeoutError):
        await recv_json(ws, 0.3)
    assert not pong_waiter.done()
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "BREAK"})  # still stalled
    msg = await recv_json(ws, 2)  # first frame after the stall
    assert msg["topicName"] == "channel.metadata"
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "AWAY"})
    change = await recv_until(ws, is_change)
    assert change["eventBody"]["presenceDefinition"]["systemPresence"] in ("AWAY", "Away")
    stats = await sim.stats()
    assert stats["framesLost"] >= 2


async def test_maintenance_sends_socket_closing_then_closes(sim: Sim) -> None:
    """maintenance sends v2.system.socket_closing, closes after the grace; the channel lives on."""
    ch = await sim.channel()
    ws = await sim.connect(ch)
    await sim.admin("POST", "/sim/faults/maintenance", {"graceSeconds": 0.3})
    msg = await recv_json(ws, 2)
    assert msg["topicName"] == "v2.system.socket_closing"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(ws.wait_closed(), 3)
    assert loop.time() - t0 >= 0.2
    assert ws.close_code == 1001
    again = await sim.connect(ch)
    assert again.state.name == "OPEN"


async def test_expire_fault_ends_the_channel(sim: Sim) -> None:
    """expire removes the channel at once: socket closed, HEAD 404."""
    ch = await sim.channel()
    ws = await sim.connect(ch)
    await sim.admin("POST", "/sim/faults/expire", {})
    await asyncio.wait_for(ws.wait_closed(), 3)
    assert ws.close_reason == "channel expired"
    assert (await sim.api("HEAD", f"{CHANNELS}/{ch['id']}")).status_code == 404


async def test_http_fault_fails_the_next_requests(sim: Sim) -> None:
    """An http fault makes the next `count` matching requests fail, then normal service resumes."""
    await sim.api("GET", "/api/v2/users")  # token first
    await sim.admin("POST", "/sim/faults/http", {"status": 503, "count": 2, "pathPrefix": "/api/v2/users"})
    assert (await sim.api("GET", "/api/v2/presence/definitions")).status_code == 200
    for _ in range(2):
        r = await sim.api("GET", "/api/v2/users")
        assert r.status_code == 503 and r.json()["status"] == 503
    assert (await sim.api("GET", "/api/v2/users")).status_code == 200


async def test_http_429_fault_has_retry_after(sim: Sim) -> None:
    """An injected 429 carries Retry-After and the Genesys code; OAuth is hit too without a prefix."""
    await sim.admin("POST", "/sim/faults/http", {"status": 429, "count": 1})
    r = await sim.http.post(
        "/oauth/token", auth=("sim-client", "sim-secret"), data={"grant_type": "client_credentials"}
    )
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.json()["code"] == "too.many.requests.retry.after"
    assert (await sim.admin("POST", "/sim/faults/http", {"status": 418})).status_code == 400


async def test_duplicate_frame_fault(sim: Sim) -> None:
    """duplicate sends the change frame twice."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[combined(uid)]))
    await sim.admin("POST", "/sim/faults/frames", {"kind": "duplicate", "count": 1})
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "BREAK"})
    frames = [await recv_until(ws, is_change) for _ in range(3)]
    assert frames[0] == frames[1] != frames[2]


async def test_malformed_frame_fault(sim: Sim) -> None:
    """malformed sends an unparseable copy before the real frame."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[combined(uid)]))
    await sim.admin("POST", "/sim/faults/frames", {"kind": "malformed", "count": 1})
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    raw = await asyncio.wait_for(ws.recv(), 2)
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert is_change(await recv_json(ws))


async def test_drop_frame_fault_loses_the_change_but_keeps_the_socket(sim: Sim) -> None:
    """drop loses the next change frame; the socket still answers pings and delivers later changes."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[combined(uid)]))
    lost_before = (await sim.admin("GET", "/sim/stats")).json()["framesLost"]
    await sim.admin("POST", "/sim/faults/frames", {"kind": "drop", "count": 1})
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    await ws.send('{"message": "ping"}')
    pong = await recv_json(ws)
    assert pong["eventBody"]["message"] == "pong"
    kept = (await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "BREAK"})).json()
    assert (await recv_until(ws, is_change))["eventBody"]["modifiedDate"] == kept["changedAt"]
    assert (await sim.admin("GET", "/sim/stats")).json()["framesLost"] == lost_before + 1


async def test_out_of_order_frame_fault(sim: Sim) -> None:
    """out-of-order delivers a change after the next one, so the older timestamp arrives last."""
    uid = sim.user_ids[0]
    ws = await sim.connect(await sim.channel(topics=[combined(uid)]))
    await sim.admin("POST", "/sim/faults/frames", {"kind": "out-of-order", "count": 1})
    first = (await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})).json()
    second = (await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "BREAK"})).json()
    a, b = await recv_until(ws, is_change), await recv_until(ws, is_change)
    assert a["eventBody"]["modifiedDate"] == second["changedAt"]
    assert b["eventBody"]["modifiedDate"] == first["changedAt"]


async def test_frames_raised_without_a_socket_are_never_replayed(sim: Sim) -> None:
    """A change made while no socket is connected is lost for that channel."""
    uid = sim.user_ids[0]
    ch = await sim.channel(topics=[combined(uid)])
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    ws = await sim.connect(ch)
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "BREAK"})
    msg = await recv_until(ws, is_change)
    assert msg["eventBody"]["presenceDefinition"]["systemPresence"] in ("BREAK", "Break")

    async def lost_counted() -> bool:
        return int((await sim.stats())["framesLost"]) == 1

    await eventually(lost_counted)
