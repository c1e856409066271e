"""Users, presence and routing-status REST endpoints."""

from __future__ import annotations

from tests.sim.conftest import Sim, StartSim


async def test_users_are_paged_with_next_uri(start_sim: StartSim) -> None:
    """pageSize/pageNumber/total/pageCount/nextUri; following nextUri lists every user once."""
    sim = await start_sim(agents=60)
    r = await sim.api("GET", "/api/v2/users", params={"pageSize": 25})
    body = r.json()
    assert (body["pageSize"], body["pageNumber"], body["total"], body["pageCount"]) == (25, 1, 60, 3)
    seen = [u["id"] for u in body["entities"]]
    while "nextUri" in body:
        body = (await sim.api("GET", body["nextUri"])).json()
        seen += [u["id"] for u in body["entities"]]
    assert body["pageNumber"] == 3
    assert seen == sim.user_ids


async def test_page_size_above_500_is_400(sim: Sim) -> None:
    """pageSize is at most 500; bad paging values are 400."""
    assert (await sim.api("GET", "/api/v2/users", params={"pageSize": 500})).status_code == 200
    for params in ({"pageSize": 501}, {"pageSize": 0}, {"pageNumber": 0}, {"pageSize": "x"}):
        r = await sim.api("GET", "/api/v2/users", params=params)
        assert r.status_code == 400, params
        assert r.json()["code"] == "bad.request"


async def test_id_filter_accepts_repeated_and_comma_joined(sim: Sim) -> None:
    """id=a&id=b and id=a,b select the same users; unknown ids are left out."""
    a, b, c = sim.user_ids[:3]
    r1 = await sim.api("GET", "/api/v2/users", params=[("id", a), ("id", b)])
    r2 = await sim.api("GET", "/api/v2/users", params={"id": f"{a},{b},unknown"})
    assert [u["id"] for u in r1.json()["entities"]] == [a, b]
    assert [u["id"] for u in r2.json()["entities"]] == [a, b]
    r3 = await sim.api(
        "GET", "/api/v2/users", params={"id": ",".join([c] * 2 + [f"x{i}" for i in range(101)])}
    )
    assert r3.status_code == 400


async def test_expand_adds_presence_and_routing_status(sim: Sim) -> None:
    """expand=presence,routingStatus adds both blocks in Genesys's shape."""
    r = await sim.api("GET", "/api/v2/users", params={"expand": "presence,routingStatus", "pageSize": 1})
    user = r.json()["entities"][0]
    presence = user["presence"]
    assert set(presence["presenceDefinition"]) == {"id", "systemPresence"}
    assert presence["source"] == "PURECLOUD" and presence["primary"] is True
    assert presence["modifiedDate"].endswith("Z")
    assert set(user["routingStatus"]) >= {"status", "startTime"}
    plain = (await sim.api("GET", "/api/v2/users", params={"pageSize": 1})).json()["entities"][0]
    assert "presence" not in plain and "routingStatus" not in plain


async def test_removed_user_moves_to_state_deleted(sim: Sim) -> None:
    """DELETE /sim/users/{id} takes the user out of state=active and into state=deleted."""
    gone = sim.user_ids[0]
    assert (await sim.admin("DELETE", f"/sim/users/{gone}")).status_code == 204
    active = (await sim.api("GET", "/api/v2/users", params={"pageSize": 500})).json()
    assert gone not in [u["id"] for u in active["entities"]] and active["total"] == 19
    deleted = (await sim.api("GET", "/api/v2/users", params={"state": "deleted"})).json()
    assert [u["id"] for u in deleted["entities"]] == [gone]
    assert (await sim.api("GET", f"/api/v2/users/{gone}/routingstatus")).status_code == 404
    assert (await sim.api("GET", "/api/v2/users", params={"state": "bogus"})).status_code == 400


async def test_bulk_presence_limits_and_shape(sim: Sim) -> None:
    """Bulk presence takes 1..50 ids (repeated or comma-joined) and returns a list."""
    ids = sim.user_ids[:3]
    r = await sim.api("GET", "/api/v2/users/presences/purecloud/bulk", params={"id": ",".join(ids)})
    assert r.status_code == 200
    body = r.json()
    assert [p["userId"] for p in body] == ids
    assert set(body[0]) >= {"userId", "presenceDefinition", "message", "modifiedDate", "source", "primary"}
    assert body[0]["source"] == "PURECLOUD"
    r = await sim.api(
        "GET", "/api/v2/users/presences/purecloud/bulk", params=[("id", i) for i in ids] + [("id", "x")]
    )
    assert [p["userId"] for p in r.json()] == ids
    many = [f"u{i}" for i in range(51)]
    assert (
        await sim.api("GET", "/api/v2/users/presences/purecloud/bulk", params={"id": ",".join(many)})
    ).status_code == 400
    assert (await sim.api("GET", "/api/v2/users/presences/purecloud/bulk")).status_code == 400


async def test_single_presence_and_routing_status_match_truth(sim: Sim) -> None:
    """Per-user presence and routing status agree with /sim/truth; unknown users are 404."""
    uid = sim.user_ids[0]
    truth = (await sim.admin("GET", "/sim/truth")).json()["users"][uid]
    presence = (await sim.api("GET", f"/api/v2/users/{uid}/presences/purecloud")).json()
    routing = (await sim.api("GET", f"/api/v2/users/{uid}/routingstatus")).json()
    assert presence["presenceDefinition"]["id"] == truth["presence"]["presenceDefinitionId"]
    assert presence["modifiedDate"] == truth["presence"]["modifiedDate"]
    assert routing == {"userId": uid, **truth["routingStatus"]}
    for path in ("/api/v2/users/nobody/presences/purecloud", "/api/v2/users/nobody/routingstatus"):
        r = await sim.api("GET", path)
        assert r.status_code == 404 and r.json()["status"] == 404


async def test_presence_definitions_include_org_defined_labels(sim: Sim) -> None:
    """System presences plus Lunch (Meal) and Coaching (Meeting), paged."""
    body = (await sim.api("GET", "/api/v2/presence/definitions")).json()
    defs = {d["languageLabels"]["en_US"]: d for d in body["entities"]}
    for label in (
        "Available",
        "Away",
        "Break",
        "Busy",
        "Meal",
        "Meeting",
        "Training",
        "Offline",
        "On Queue",
        "Idle",
    ):
        assert defs[label]["primary"] is True
    assert defs["Lunch"]["systemPresence"] == "Meal" and defs["Lunch"]["primary"] is False
    assert defs["Coaching"]["systemPresence"] == "Meeting"
    assert defs["On Queue"]["systemPresence"] == "OnQueue", "the SDK enum spelling, no space"
    assert body["total"] == len(body["entities"])
