"""The /sim admin API: truth, change log, stats, generator control, users; where it is served."""

from __future__ import annotations

import httpx

from bridge.sim.config import SimConfig
from bridge.sim.server import run_simulator
from tests.sim.conftest import Sim, StartSim, combined, eventually, recv_until


async def test_truth_has_every_user_state(sim: Sim) -> None:
    """/sim/truth maps each user to presence and routingStatus with timestamps."""
    body = (await sim.admin("GET", "/sim/truth")).json()
    assert set(body["users"]) == set(sim.user_ids)
    entry = body["users"][sim.user_ids[0]]
    assert set(entry["presence"]) >= {"systemPresence", "presenceDefinitionId", "modifiedDate"}
    assert set(entry["routingStatus"]) == {"status", "startTime"}
    assert entry["presence"]["systemPresence"].isupper()


async def test_admin_changes_update_truth_and_log(sim: Sim) -> None:
    """PUT presence/routing-status changes truth and appends numbered entries to /sim/events."""
    uid = sim.user_ids[0]
    p = (await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "Meal"})).json()
    r = (await sim.admin("PUT", f"/sim/users/{uid}/routing-status", {"status": "OFF_QUEUE"})).json()
    assert (p["seq"], r["seq"]) == (1, 2)
    truth = (await sim.admin("GET", "/sim/truth")).json()["users"][uid]
    assert truth["presence"]["systemPresence"] == "MEAL"
    assert truth["presence"]["modifiedDate"] == p["changedAt"]
    log = (await sim.admin("GET", "/sim/events?since=0")).json()
    assert [(e["seq"], e["userId"], e["kind"], e["value"]) for e in log["events"]] == [
        (1, uid, "presence", "MEAL"),
        (2, uid, "routingStatus", "OFF_QUEUE"),
    ]
    assert (await sim.admin("GET", "/sim/events?since=1")).json()["events"][0]["seq"] == 2
    assert (
        await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "NAP"})
    ).status_code == 400
    assert (await sim.admin("PUT", "/sim/users/ghost/routing-status", {"status": "IDLE"})).status_code == 404


async def test_presence_definition_can_be_chosen(sim: Sim) -> None:
    """presenceDefinitionId picks an org-defined presence such as Lunch."""
    defs = (await sim.api("GET", "/api/v2/presence/definitions")).json()["entities"]
    lunch = next(d for d in defs if d["languageLabels"]["en_US"] == "Lunch")
    uid = sim.user_ids[0]
    change = (
        await sim.admin("PUT", f"/sim/users/{uid}/presence", {"presenceDefinitionId": lunch["id"]})
    ).json()
    assert change["value"] == "MEAL" and change["presenceDefinitionId"] == lunch["id"]


async def test_added_users_appear_and_can_be_subscribed(sim: Sim) -> None:
    """POST /sim/users creates active users that the API lists and channels accept."""
    ids = (await sim.admin("POST", "/sim/users", {"count": 3})).json()["ids"]
    assert len(ids) == 3
    listed = (await sim.api("GET", "/api/v2/users", params={"id": ",".join(ids)})).json()
    assert [u["id"] for u in listed["entities"]] == ids
    ws = await sim.connect(await sim.channel(topics=[combined(ids[0])]))
    await sim.admin("PUT", f"/sim/users/{ids[0]}/routing-status", {"status": "IDLE"})
    assert (await recv_until(ws, lambda m: "topicName" in m and "users" in m["topicName"]))[
        "topicName"
    ].startswith(f"v2.users.{ids[0]}")


async def test_generator_control(start_sim: StartSim) -> None:
    """POST /sim/generator pauses, resumes and sets the rate; the log grows only while running."""
    sim = await start_sim(generator_paused=False, events_per_sec=500)

    async def moving() -> bool:
        return int((await sim.stats())["changesEmitted"]) > 20

    await eventually(moving)
    r = await sim.admin("POST", "/sim/generator", {"paused": True, "eventsPerSec": 50})
    assert r.json() == {"paused": True, "eventsPerSec": 50.0}
    frozen = (await sim.stats())["lastSeq"]
    assert (await sim.admin("GET", "/sim/events", None)).json()["lastSeq"] == frozen
    assert (await sim.stats())["lastSeq"] == frozen
    assert (await sim.admin("POST", "/sim/generator", {"paused": "yes"})).status_code == 400


async def test_stats_report_channels_sockets_requests_frames(sim: Sim) -> None:
    """/sim/stats has channels (with topics and user ids), sockets, requests by route and status, counters."""
    uid = sim.user_ids[0]
    ch = await sim.channel(topics=[combined(uid)])
    ws = await sim.connect(ch)
    await sim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    await recv_until(ws, lambda m: "version" in m)
    stats = await sim.stats()
    [channel] = stats["channels"]
    assert channel["id"] == ch["id"] and channel["clientId"] == "sim-client" and channel["connected"] is True
    assert channel["topics"] == 1 and channel["userIds"] == [uid] and channel["topicNames"] == [combined(uid)]
    assert channel["expires"].endswith("Z")
    assert [s["channelId"] for s in stats["sockets"]] == [ch["id"]]
    assert stats["requests"]["POST /api/v2/notifications/channels"] == {"200": 1}
    assert stats["requests"]["GET /channels/{channel_id}"] == {"101": 1}
    assert stats["changesEmitted"] == 1 and stats["framesDelivered"] == 1


async def test_stats_count_requests_per_client_including_429s(start_sim: StartSim) -> None:
    """/sim/stats requestsByClient counts each client's requests by route and status, refused ones too."""
    sim = await start_sim(rate_limit_per_min=2, clients={"a": "sa", "b": "sb"})
    a, b = await sim.token("a", "sa"), await sim.token("b", "sb")
    for _ in range(3):
        await sim.api("GET", "/api/v2/users", a)
    await sim.api("GET", "/api/v2/presence/definitions", b)
    await sim.api("GET", "/api/v2/users", "not-a-token")
    by_client = (await sim.stats())["requestsByClient"]
    assert by_client == {
        "a": {"GET /api/v2/users": {"200": 2, "429": 1}},
        "b": {"GET /api/v2/presence/definitions": {"200": 1}},
    }


async def test_admin_not_served_on_public_bind_without_token() -> None:
    """Bound to 0.0.0.0 without an admin token, /sim/ does not exist."""
    async with (
        run_simulator(SimConfig(host="0.0.0.0", port=0, agents=1, generator_paused=True)) as handle,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{handle.port}") as http,
    ):
        assert (await http.get("/sim/truth")).status_code == 404


async def test_admin_token_guards_the_admin_api(start_sim: StartSim) -> None:
    """With an admin token configured, /sim/ needs X-Sim-Admin-Token."""
    sim = await start_sim(admin_token="s3cret")
    assert (await sim.http.get("/sim/stats")).status_code == 401
    assert (await sim.http.get("/sim/stats", headers={"X-Sim-Admin-Token": "s3cret"})).status_code == 200
