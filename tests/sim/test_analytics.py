"""``POST /api/v2/analytics/users/details/query``: shape, delay, paging, validation, limits, faults.

The simulator runs on an injected wall clock, so the analytics delay is stepped over, not slept.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from bridge.sim.analytics import MAX_PAGE_SIZE, MAX_USER_PREDICATES, USER_DETAILS_QUERY_ROUTE
from bridge.sim.org import iso_ms
from tests.sim.conftest import Sim, StartSim

DELAY_MS = 5000
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DAY_MS = 86_400_000


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


NOON = _ms("2026-12-01T12:00:00+00:00")


class Clock:
    """A wall clock in ms that only moves when told."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> int:
        self.ms += ms
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
async def asim(start_sim: StartSim, clock: Clock) -> Sim:
    """A paused simulator (20 agents, 5 s analytics delay) on the test's clock."""
    return await start_sim(clock_ms=clock)


def query(users: list[str] | None, start: int, end: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"interval": f"{iso_ms(start)}/{iso_ms(end)}", **extra}
    if users is not None:
        predicates = [
            {"type": "dimension", "dimension": "userId", "operator": "matches", "value": u} for u in users
        ]
        body["userFilters"] = [{"type": "or", "predicates": predicates}]
    return body


async def post(sim: Sim, body: Any, token: str | None = None) -> httpx.Response:
    return await sim.api("POST", USER_DETAILS_QUERY_ROUTE, token, json=body)


def flatten(page: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(userId, array, record) of a page, in page order per user."""
    return [
        (d["userId"], key, r)
        for d in page.get("userDetails", [])
        for key in ("primaryPresence", "routingStatus")
        for r in d.get(key, [])
    ]


async def walk(sim: Sim, body: dict[str, Any], page_size: int) -> tuple[list[Any], list[int], set[int]]:
    """Every page until one without records: (records, records per page, totalHits seen)."""
    records: list[Any] = []
    sizes: list[int] = []
    totals: set[int] = set()
    number = 1
    while True:
        r = await post(sim, {**body, "paging": {"pageSize": page_size, "pageNumber": number}})
        assert r.status_code == 200, r.text
        page = flatten(r.json())
        totals.add(r.json()["totalHits"])
        if not page:
            return records, sizes, totals
        records.extend(page)
        sizes.append(len(page))
        number += 1


def sequences(records: list[Any]) -> dict[tuple[str, str], list[str]]:
    """startTimes per (userId, array), in the order the pages gave them."""
    out: dict[tuple[str, str], list[str]] = {}
    for user, array, record in records:
        out.setdefault((user, array), []).append(record["startTime"])
    return out


def keyed(records: list[Any]) -> list[tuple[str, str, str]]:
    """(userId, array, startTime) of each record."""
    return [(user, array, record["startTime"]) for user, array, record in records]


def user_order(records: list[Any]) -> list[str]:
    """userIds in order of first appearance."""
    return list(dict.fromkeys(user for user, _, _ in records))


def _other(current: str, options: tuple[str, ...]) -> str:
    return next(o for o in options if o != current)


async def test_answer_has_the_sdk_shape_unclipped_chained_and_open(asim: Sim, clock: Clock) -> None:
    """Per user: presence and routing records, the first unclipped, chained to the ms, the last open."""
    org = asim.handle.simulator.org
    uid = asim.user_ids[0]
    user = org.users[uid]
    since, sp0, def0, rs0 = (
        user.presence_ms,
        user.definition.system_presence,
        user.definition.id,
        user.routing_status,
    )
    clock.advance(10_000)
    sp1 = _other(sp0, ("BREAK", "MEAL"))
    p1 = (await asim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": sp1})).json()
    clock.advance(1234)
    rs1 = _other(rs0, ("IDLE", "OFF_QUEUE"))
    r1 = (await asim.admin("PUT", f"/sim/users/{uid}/routing-status", {"status": rs1})).json()
    clock.advance(DELAY_MS)
    r = await post(asim, query([uid], NOON + 1, clock.ms + 60_000, order="asc"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "userDetails": [
            {
                "userId": uid,
                "primaryPresence": [
                    {
                        "startTime": iso_ms(since),
                        "endTime": p1["changedAt"],
                        "systemPresence": sp0,
                        "organizationPresenceId": def0,
                    },
                    {
                        "startTime": p1["changedAt"],
                        "systemPresence": sp1,
                        "organizationPresenceId": org.primary[sp1].id,
                    },
                ],
                "routingStatus": [
                    {"startTime": iso_ms(since), "endTime": r1["changedAt"], "routingStatus": rs0},
                    {"startTime": r1["changedAt"], "routingStatus": rs1},
                ],
            }
        ],
        "totalHits": 4,
    }
    assert since <= NOON  # the first record started before the interval and comes back whole
    assert all(
        ISO_MS.match(rec[k]) for _, _, rec in flatten(r.json()) for k in ("startTime", "endTime") if k in rec
    )


async def test_no_hits_is_total_hits_zero_without_user_details(asim: Sim) -> None:
    """An unknown user, or an interval before any history: exactly {"totalHits": 0}."""
    r = await post(asim, query(["00000000-0000-4000-8000-000000000000"], NOON - 60_000, NOON))
    assert r.json() == {"totalHits": 0}
    r = await post(asim, query(asim.user_ids[:3], NOON - 10 * DAY_MS, NOON - 9 * DAY_MS))
    assert r.json() == {"totalHits": 0}


async def test_message_only_change_starts_no_record_but_another_definition_does(
    asim: Sim, clock: Clock
) -> None:
    """Same definition with a new message: no new record; an org-defined "Lunch" (MEAL): a new one."""
    org = asim.handle.simulator.org
    uid = asim.user_ids[1]
    clock.advance(1000)
    await asim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL"})
    clock.advance(1000)
    await asim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": "MEAL", "message": "back at 1"})
    lunch = next(d for d in org.by_system["MEAL"] if not d.primary)
    clock.advance(1000)
    await asim.admin("PUT", f"/sim/users/{uid}/presence", {"presenceDefinitionId": lunch.id})
    clock.advance(DELAY_MS)
    detail = (await post(asim, query([uid], NOON + 1500, clock.ms))).json()["userDetails"][0]
    assert [(p["systemPresence"], p["organizationPresenceId"]) for p in detail["primaryPresence"]] == [
        ("MEAL", org.primary["MEAL"].id),
        ("MEAL", lunch.id),
    ]


async def test_a_change_younger_than_the_delay_is_invisible_then_visible(asim: Sim, clock: Clock) -> None:
    """Until the change is 5 s old the record before it looks open; at 5 s the change is there."""
    uid = asim.user_ids[2]
    before = asim.handle.simulator.org.users[uid].definition.system_presence
    clock.advance(60_000)
    after = _other(before, ("TRAINING", "AWAY"))
    change = (await asim.admin("PUT", f"/sim/users/{uid}/presence", {"systemPresence": after})).json()
    body = query([uid], NOON, clock.ms + 60_000)

    async def presence() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = (await post(asim, body)).json()["userDetails"][0]["primaryPresence"]
        return records

    seen = await presence()
    assert len(seen) == 1 and "endTime" not in seen[0] and seen[0]["systemPresence"] == before
    clock.advance(DELAY_MS - 1)
    assert len(await presence()) == 1
    clock.advance(1)
    seen = await presence()
    assert [p["systemPresence"] for p in seen] == [before, after]
    assert seen[0]["endTime"] == seen[1]["startTime"] == change["changedAt"] and "endTime" not in seen[1]


async def test_a_multi_page_walk_loses_and_duplicates_nothing(asim: Sim, clock: Clock) -> None:
    """Pages of 7 over 20 agents' generated changes: each record once, asc, every page full but the last."""
    sim = asim.handle.simulator
    for _ in range(120):
        clock.advance(37)
        sim.generator.step()
    clock.advance(DELAY_MS)
    ids = asim.user_ids
    body = query(ids, NOON, clock.ms + 1, order="asc")
    whole = (await post(asim, {**body, "paging": {"pageSize": MAX_PAGE_SIZE, "pageNumber": 1}})).json()
    records, sizes, totals = await walk(asim, body, 7)
    changes = list(sim.org.events_since(0, 10_000))
    assert len(records) == 2 * len(ids) + len(changes) == whole["totalHits"]
    assert totals == {len(records)} and set(sizes[:-1]) == {7} and 0 < sizes[-1] <= 7
    keys = [(u, a, rec["startTime"]) for u, a, rec in records]
    assert len(set(keys)) == len(keys)
    assert all(seq == sorted(seq) for seq in sequences(records).values())
    assert user_order(records) == sorted(ids)
    arrays = {"presence": "primaryPresence", "routingStatus": "routingStatus"}
    assert {(c.user_id, arrays[c.kind], iso_ms(c.changed_ms)) for c in changes} <= set(keys)


async def test_desc_reverses_asc_and_unordered_holds_the_same_records(asim: Sim, clock: Clock) -> None:
    """order=desc is asc reversed; unordered is a stable different order of the same records."""
    sim = asim.handle.simulator
    for _ in range(60):
        clock.advance(11)
        sim.generator.step()
    clock.advance(DELAY_MS)
    body = query(asim.user_ids, NOON, clock.ms)

    async def listing(order: str) -> list[Any]:
        return (await walk(asim, {**body, "order": order}, 9))[0]

    asc, desc, unordered = await listing("asc"), await listing("desc"), await listing("unordered")
    assert {k: v[::-1] for k, v in sequences(desc).items()} == sequences(asc)
    assert user_order(desc) == user_order(asc)[::-1]
    assert sorted(keyed(unordered)) == sorted(keyed(asc)) and unordered != asc
    assert await listing("unordered") == unordered


async def test_without_user_filters_every_agent_with_history_answers(asim: Sim) -> None:
    """No userFilters: every agent (interval at most 7 days); default page size 25."""
    r = await post(asim, {"interval": f"{iso_ms(NOON - 7 * DAY_MS)}/{iso_ms(NOON)}"})
    assert r.status_code == 200
    assert r.json()["totalHits"] == 2 * len(asim.user_ids) and len(flatten(r.json())) == 25


async def test_a_record_across_utc_midnight_counts_per_day_and_pages_run_short(start_sim: StartSim) -> None:
    """Stored once per UTC day: totalHits counts it twice, the copy is dropped after paging (short page)."""
    clock = Clock(_ms("2026-12-01T23:59:00+00:00"))
    sim = await start_sim(clock_ms=clock, agents=1)
    uid = sim.user_ids[0]
    clock.ms = _ms("2026-12-02T00:01:00+00:00")
    current = sim.handle.simulator.org.users[uid].definition.system_presence
    await sim.admin(
        "PUT", f"/sim/users/{uid}/presence", {"systemPresence": _other(current, ("BUSY", "AWAY"))}
    )
    clock.advance(DELAY_MS)
    body = query([uid], _ms("2026-12-01T22:00:00+00:00"), _ms("2026-12-02T01:00:00+00:00"))
    whole = (await post(sim, body)).json()
    assert len(flatten(whole)) == 3 and whole["totalHits"] == 5  # presence 2 + 1, routing (open) 2
    records, sizes, totals = await walk(sim, body, 2)
    assert sizes == [1, 1, 1] and totals == {5}
    assert sorted(keyed(records)) == sorted(keyed(flatten(whole)))
    records, _, _ = await walk(sim, body, 3)  # [P1 P1 R1] [R1 P2]: R1 straddles the boundary
    assert len(records) == 4 and set(keyed(records)) == set(keyed(flatten(whole)))


def _filter(*predicates: dict[str, Any], kind: str = "or") -> list[dict[str, Any]]:
    return [{"type": kind, "predicates": list(predicates)}]


_P = {"type": "dimension", "dimension": "userId", "operator": "matches", "value": "u"}
_OK = f"{iso_ms(NOON - 3_600_000)}/{iso_ms(NOON)}"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "interval is required"),
        ({"interval": "yesterday"}, "interval is required"),
        ({"interval": "2026-12-01T10:00:00/2026-12-01T11:00:00"}, "UTC offset"),
        ({"interval": "2026-13-01T10:00:00Z/2026-12-01T11:00:00Z"}, "not an ISO-8601"),
        ({"interval": f"{iso_ms(NOON)}/{iso_ms(NOON)}"}, "start must be before"),
        ({"interval": _OK, "order": "sideways"}, "order must be"),
        ({"interval": _OK, "order": ""}, "order must be"),
        ({"interval": _OK, "pageSize": 10}, "unknown field(s): pageSize"),
        ({"interval": _OK, "userFilters": [{"type": "xor", "predicates": [_P]}]}, "type must be and or or"),
        ({"interval": _OK, "userFilters": [{"type": "or"}]}, "needs predicates or clauses"),
        ({"interval": _OK, "userFilters": _filter({**_P, "dimension": "queueId"})}, "userId dimension"),
        ({"interval": _OK, "userFilters": _filter({**_P, "type": "metric"})}, "dimension predicates only"),
        ({"interval": _OK, "userFilters": _filter({**_P, "value": None})}, "a userId is required"),
        ({"interval": _OK, "userFilters": _filter({**_P, "operator": "equals"})}, "operator must be"),
        ({"interval": _OK, "userFilters": {"type": "or"}}, "userFilters must be a list"),
        ({"interval": _OK, "paging": {"pageSize": 0}}, "pageSize must be"),
        ({"interval": _OK, "paging": {"pageSize": MAX_PAGE_SIZE + 1}}, "pageSize must be"),
        ({"interval": _OK, "paging": {"pageSize": "10"}}, "pageSize must be"),
        ({"interval": _OK, "paging": {"pageSize": 10, "pageNumber": 0}}, "pageNumber must be"),
        ({"interval": _OK, "presenceFilters": [{"type": "or"}]}, "not supported by the simulator"),
        ([], "the body must be an object"),
    ],
)
async def test_invalid_queries_are_400_with_a_genesys_error_body(sim: Sim, body: Any, fragment: str) -> None:
    """Each malformed UserDetailsQuery is a 400 bad.request naming what is wrong."""
    r = await post(sim, body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert (err["code"], err["status"]) == ("bad.request", 400) and err["contextId"]
    assert fragment in err["message"]


async def test_a_body_that_is_not_json_is_400(sim: Sim) -> None:
    """Not JSON at all: 400 with the Genesys error body."""
    r = await sim.api(
        "POST", USER_DETAILS_QUERY_ROUTE, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["code"]) == (400, "bad.request")


async def test_limits_predicates_and_interval_length(sim: Sim) -> None:
    """100 userId predicates pass and 101 do not; 31 days with userFilters, 7 without."""
    preds = [{**_P, "value": f"user-{i}"} for i in range(MAX_USER_PREDICATES + 1)]
    assert (await post(sim, {"interval": _OK, "userFilters": _filter(*preds[:-1])})).status_code == 200
    r = await post(sim, {"interval": _OK, "userFilters": _filter(*preds)})
    assert r.status_code == 400 and "at most 100 userId predicates" in r.json()["message"]
    clause = [
        {"type": "and", "predicates": preds[:50], "clauses": [{"type": "or", "predicates": preds[50:]}]}
    ]
    assert (await post(sim, {"interval": _OK, "userFilters": clause})).status_code == 400  # clauses count too
    filters = _filter(_P)
    month = {"userFilters": filters, "interval": f"{iso_ms(NOON - 31 * DAY_MS)}/{iso_ms(NOON)}"}
    assert (await post(sim, month)).status_code == 200
    month["interval"] = f"{iso_ms(NOON - 31 * DAY_MS - 1)}/{iso_ms(NOON)}"
    assert "at most 31 days" in (await post(sim, month)).json()["message"]
    assert (await post(sim, {"interval": f"{iso_ms(NOON - 7 * DAY_MS)}/{iso_ms(NOON)}"})).status_code == 200
    r = await post(sim, {"interval": f"{iso_ms(NOON - 7 * DAY_MS - 1)}/{iso_ms(NOON)}"})
    assert "at most 7 days without userFilters" in r.json()["message"]


async def test_and_clauses_and_exists_select_users(asim: Sim) -> None:
    """Filters are ANDed; "and" of two different ids is nobody; exists is everybody; clauses nest once."""
    a, b = asim.user_ids[:2]

    async def users(filters: list[dict[str, Any]]) -> set[str]:
        page = (
            await post(asim, {"interval": _OK, "userFilters": filters, "paging": {"pageSize": 100}})
        ).json()
        return {d["userId"] for d in page.get("userDetails", [])}

    assert await users(_filter({**_P, "value": a}, {**_P, "value": b})) == {a, b}
    assert await users(_filter({**_P, "value": a}, {**_P, "value": b}, kind="and")) == set()
    exists = {"type": "dimension", "dimension": "userId", "operator": "exists"}
    assert await users(_filter({**_P, "value": b}, exists, kind="and")) == {b}
    nested = [
        {
            "type": "and",
            "predicates": [exists],
            "clauses": [{"type": "or", "predicates": [{**_P, "value": a}]}],
        }
    ]
    assert await users(nested) == {a}
    assert await users([*_filter({**_P, "value": a}), *_filter({**_P, "value": b})]) == set()


async def test_analytics_fault_is_403_for_the_query_only(asim: Sim) -> None:
    """{"forbidden": true}: the query is 403 missing.permissions, other calls work; false lifts it."""
    r = await asim.admin("POST", "/sim/faults/analytics", {"forbidden": True})
    assert r.json() == {"forbidden": True}
    r = await post(asim, query(asim.user_ids[:1], NOON - 1000, NOON))
    assert r.status_code == 403
    err = r.json()
    assert (err["code"], err["status"]) == ("missing.permissions", 403)
    assert "analytics:userDetail:view" in err["message"]
    assert (await asim.api("GET", "/api/v2/users")).status_code == 200
    await asim.admin("POST", "/sim/faults/analytics", {"forbidden": False})
    assert (await post(asim, query(asim.user_ids[:1], NOON - 1000, NOON))).status_code == 200
    assert (await asim.admin("POST", "/sim/faults/analytics", {"forbidden": "yes"})).status_code == 400


async def test_queries_count_against_the_token_rate_limit(start_sim: StartSim) -> None:
    """The query shares the token's window with other calls: 429 + Retry-After past it, and counted."""
    sim = await start_sim(rate_limit_per_min=3)
    token = await sim.token()
    body = query(sim.user_ids[:1], NOON - 1000, NOON)
    first = await post(sim, body, token)
    assert first.status_code == 200 and first.headers["inin-ratelimit-count"] == "1"
    assert (await sim.api("GET", "/api/v2/users", token)).status_code == 200
    assert (await post(sim, body, token)).status_code == 200
    refused = await post(sim, body, token)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["code"] == "too.many.requests.retry.after"
    assert (await sim.stats())["requests"][f"POST {USER_DETAILS_QUERY_ROUTE}"] == {"200": 2, "429": 1}


@pytest.mark.parametrize("status", [429, 503])
async def test_http_storm_faults_hit_the_query(sim: Sim, status: int) -> None:
    """The 429/5xx storms (POST /sim/faults/http) reach the analytics query as any /api/v2 call."""
    token = await sim.token()
    await sim.admin("POST", "/sim/faults/http", {"status": status, "count": 1})
    body = query(sim.user_ids[:1], NOON - 1000, NOON)
    r = await post(sim, body, token)
    assert r.status_code == status
    if status == 429:
        assert r.headers["Retry-After"] == "1"
    assert (await post(sim, body, token)).status_code == 200


def test_retention_follows_the_config() -> None:
    """analytics_retention_s reaches the org's history (24 h by default)."""
    from bridge.sim.config import SimConfig
    from bridge.sim.simulator import Simulator

    assert Simulator(SimConfig(agents=1)).org.history.retention_ms == 86_400_000
    assert Simulator(SimConfig(agents=1, analytics_retention_s=60)).org.history.retention_ms == 60_000
